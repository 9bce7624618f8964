import re
from pathlib import Path

from switchboard.services import SERVICES
from switchboard.settings_doc import render

ROOT = Path(__file__).resolve().parents[2]


def test_readme_documents_every_setting_with_its_current_default():
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"<!-- settings:begin -->\n(.*)\n<!-- settings:end -->", readme, re.S)
    assert section, "README has no settings section"
    assert section.group(1) == render(), "README settings are stale: run python -m switchboard.settings_doc"


def test_every_service_documents_every_setting():
    for service in SERVICES:
        for name, field in service.settings_class().model_fields.items():
            assert field.description, f"{service.name}.{name} has no description"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()
