"""Turn-taking profiles per language, and the check that an early transcript is not left hanging.

How the end of a turn is decided (the policy that uses these numbers):

1. After ``pause_ms`` of silence the turn is judged: Smart Turn on the audio so far, and an early
   transcript of it.
2. It is *complete* when Smart Turn's probability reaches ``smart_turn_threshold`` and the
   transcript does not end in a dangling word (``is_dangling``). Then the turn ends once the
   silence reaches ``complete_end_ms``.
3. The words hang ("I'd like to book an…", "my name is"), or Smart Turn hears unfinished prosody
   before any transcript came: the caller is probably mid-sentence. Keep listening, and end the turn
   only after ``incomplete_end_ms`` of silence.
4. The two disagree: the words make a whole sentence but the voice sounds unfinished, or the
   transcript ends in a comma (the recogniser heard the voice carry on). Neither is evidence enough
   to hold the caller 1.1 s, nor to answer at 250 ms: the turn ends after ``uncertain_end_ms``, the
   fixed silence every turn waited before turns were judged. Measured on the bench's calls, Piper's
   "Yes, that's right." and "No thanks, that's all. Goodbye." scored 0.27 and 0.20 with Smart Turn,
   and read speech ends in a comma mid-paragraph: each waited the 1.1 s before this class existed.

Speech resuming at any point cancels the judgement. The call's language (``en-US``, ``es-MX``…)
picks the profile by its primary subtag; an unknown language gets English.

Why a word list as well as the model: Smart Turn hears prosody, and a phrase cut off with falling
intonation sounds finished to it (it rated "I'd like to book an" 0.90 complete); the transcript
shows what the voice does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# An utterance ending like this was cut off, whatever its last word ("so, um," / "and then...").
_TRAILING = re.compile(r"(,|;|:|-|–|—|\.\.\.|…)\s*$")
# ...but a comma, semicolon or colon is weaker evidence: the recogniser's guess that the voice carried on, which it
# also makes at the end of a whole sentence said with a level pitch ("He was not an ill-disposed young man,")
SOFT_MARKS = frozenset(",;:")
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
# For the last word of a sentence a hyphenated compound is one word: "good-by" (Moonshine's "goodbye") does not end
# in the preposition "by", nor "walk-in" in "in". Backchannels split at hyphens instead ("uh-huh" → uh, huh).
_COMPOUND = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


@dataclass(frozen=True, slots=True)
class TurnProfile:
    language: str
    pause_ms: int
    complete_end_ms: int
    incomplete_end_ms: int
    uncertain_end_ms: int
    """Silence that ends a turn whose words are whole but whose voice sounds unfinished (or ends in a comma)."""
    smart_turn_threshold: float
    dangling_words: frozenset[str]
    """A turn never ends on these: articles, conjunctions, prepositions, possessives, fillers."""
    copulas: frozenset[str] = frozenset()
    """Dangling unless after a subject pronoun: "my name is" hangs, "yes, it is" does not."""
    subject_pronouns: frozenset[str] = frozenset()
    question_words: frozenset[str] = frozenset()
    """Dangling at the end of a longer utterance ("can you tell me what"), not alone ("sorry, what?")."""
    vad_threshold: float | None = None
    """Silero speech threshold for this language; None keeps SWITCHBOARD_SILERO_THRESHOLD."""
    backchannels: frozenset[str] = frozenset()
    """Words a listener says without taking the turn ("uh-huh", "yeah"): voice over the agent's reply whose
    transcript holds only these (or no words: a cough) is no interruption: the reply resumes and the turn is not
    answered."""
    reply_start_guard_ms: int = 300
    """Caller voice starting this soon after the agent's reply started does not pause it (the caller was finishing
    their own sentence, or saying "okay" to the last answer); it still interrupts when long enough or real words."""

    def __post_init__(self) -> None:
        # ``judge`` tells the words' two verdicts apart by their wait: the three must be distinct, in this order
        if not self.complete_end_ms < self.uncertain_end_ms < self.incomplete_end_ms:
            raise ValueError(f"{self.language}: complete_end_ms < uncertain_end_ms < incomplete_end_ms is required")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


ENGLISH = TurnProfile(
    language="en",
    pause_ms=200,
    complete_end_ms=250,
    incomplete_end_ms=1100,
    uncertain_end_ms=700,
    smart_turn_threshold=0.5,
    dangling_words=_words(
        "a an the and or but nor because if than that whether unless "
        "to of in on at for with from by about into onto around between like "
        "my your our their his its "
        # demonstratives: mostly determiners before a noun ("this Friday"), and the speech recogniser completes a
        # cut-off "the" as "this" or "that" ("Could you tell me the…" was heard "Could you tell me this?")
        "this these those "
        "could would should "  # modals wanting a verb ("I was wondering if you could")
        "i'd i'm i'll i've we're you're they're it's there's that's "
        "um uh er erm hmm"
    ),
    copulas=_words("is are was were am"),
    subject_pronouns=_words("it that this he she they we you i there"),
    question_words=_words("what when where which who whom whose how why"),
    # STT spells them many ways ("Uh-huh." "Mm-hmm." "Mhm."): hyphens split into these tokens
    backchannels=_words(
        "uh huh mm hmm hm mhm mmhmm mmm um ah oh "
        "yeah yes yep yup ya okay ok alright right sure "
        "cool great good fine"
    ),
)

SPANISH = TurnProfile(
    language="es",
    # Spanish callers often pause a little longer inside a sentence: judge a touch later
    pause_ms=250,
    complete_end_ms=250,
    incomplete_end_ms=1200,
    uncertain_end_ms=800,
    smart_turn_threshold=0.5,
    dangling_words=_words(
        "el la los las un una unos unas lo "
        "y e o u pero ni que porque si aunque como "
        "a de del al en con por para sin sobre entre hasta desde hacia según "
        "mi mis tu tus su sus nuestro nuestra nuestros nuestras "
        "quisiera gustaría podría "
        "eh em mmm"
    ),
    copulas=_words("es son era eran está están estaba soy"),
    subject_pronouns=_words("lo la eso esto ello él ella ellos ellas usted yo"),
    question_words=_words("qué cuándo dónde cuál cuáles quién quiénes cómo cuánto cuánta cuántos"),
    backchannels=_words("sí si ajá aja ya vale claro bueno ok okay mhm mm hmm eh ah oh exacto perfecto"),
)

PROFILES: dict[str, TurnProfile] = {p.language: p for p in (ENGLISH, SPANISH)}


def profile_for(language: str | None) -> TurnProfile:
    """The profile of a call's language tag (``en-US``, ``es_MX``, ``ES``); English when unknown."""
    primary = re.split(r"[-_]", (language or "").strip().lower(), maxsplit=1)[0]
    return PROFILES.get(primary, ENGLISH)


def dangling_word(text: str, profile: TurnProfile) -> str | None:
    """The word (or mark) that leaves ``text`` hanging, or None when it could be a whole turn.

    A dangling word beats a soft mark after it ("so, um," → "um"); a soft mark alone is returned as itself."""
    trailing = _TRAILING.search(text)
    mark = trailing.group(1) if trailing else None
    if mark is not None and mark not in SOFT_MARKS:
        return mark
    words = [w.lower().replace("’", "'") for w in _COMPOUND.findall(text)]
    if not words:
        return mark  # nothing heard: no evidence either way
    last = words[-1]
    if last in profile.dangling_words:
        return last
    if last in profile.copulas and (len(words) < 2 or words[-2] not in profile.subject_pronouns):
        return last
    if last in profile.question_words and len(words) > 2:
        return last
    return mark


def is_backchannel(text: str, profile: TurnProfile) -> bool:
    """True when ``text`` takes no turn: no words at all (a cough, a breath) or only the profile's backchannels."""
    return all(w.lower().replace("’", "'") in profile.backchannels for w in _WORD.findall(text))


def is_dangling(text: str, profile: TurnProfile) -> bool:
    """True when the early transcript stops mid-sentence ("I'd like to book an", "Can I come in on")."""
    return dangling_word(text, profile) is not None


@dataclass(frozen=True, slots=True)
class Verdict:
    complete: bool
    end_after_ms: int
    """Total silence after which the turn ends (counted from the last voiced frame)."""
    reason: str
    """Why: "complete", "prosody" (Smart Turn below threshold) or "dangling:<word>" (a word, or a trailing mark)."""


def judge(probability: float, transcript: str | None, profile: TurnProfile) -> Verdict:
    """The end-of-turn decision from Smart Turn's probability and the early transcript.

    With no transcript (``None``: not ready, or an engine without early results) prosody alone decides, and
    unfinished prosody holds the turn for ``incomplete_end_ms``; the words, once known, may shorten that to
    ``uncertain_end_ms`` (the caller re-judges then).
    """
    words = hanging(transcript, profile) if transcript else None
    if words is not None and words.end_after_ms == profile.incomplete_end_ms:
        return words
    if probability < profile.smart_turn_threshold:
        return Verdict(False, profile.incomplete_end_ms if transcript is None else profile.uncertain_end_ms, "prosody")
    return words or Verdict(True, profile.complete_end_ms, "complete")


def hanging(transcript: str, profile: TurnProfile) -> Verdict | None:
    """What the words alone say: left hanging by a word, dash or "…" (``incomplete_end_ms``), perhaps by a trailing
    comma (``uncertain_end_ms``), or nothing against ending the turn (None)."""
    word = dangling_word(transcript, profile)
    if word is None:
        return None
    return Verdict(False, profile.uncertain_end_ms if word in SOFT_MARKS else profile.incomplete_end_ms,
                   f"dangling:{word}")
