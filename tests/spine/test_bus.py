import ssl

from switchboard.bus import Correlation, consumer_options, security_options
from switchboard.settings import ServiceSettings


def test_plaintext_is_the_default_and_adds_no_credentials():
    assert security_options(ServiceSettings()) == {"security_protocol": "PLAINTEXT"}


def test_sasl_over_tls_configures_scram_credentials_and_a_tls_context_for_every_client():
    settings = ServiceSettings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_username="stt", kafka_sasl_password="s3cret"
    )
    opts = consumer_options(settings)
    assert opts["security_protocol"] == "SASL_SSL" and opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert opts["sasl_plain_username"] == "stt" and opts["sasl_plain_password"] == "s3cret"
    assert isinstance(opts["ssl_context"], ssl.SSLContext)
    assert "s3cret" not in repr(settings)  # secrets never reach logs through the settings object


def test_correlation_ids_round_trip_through_headers_and_children_keep_the_trace():
    corr = Correlation.new_call("CA1", "MZ1", "clinic")
    back = Correlation.from_headers(corr.headers())
    assert back == corr
    child = corr.child(42)
    assert child.turn_id == "CA1:42" and child.call_id == "CA1"
    assert child.traceparent.split("-")[1] == corr.traceparent.split("-")[1]
    assert child.traceparent.split("-")[2] != corr.traceparent.split("-")[2]
