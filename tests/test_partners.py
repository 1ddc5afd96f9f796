"""Trading partners: [partners.NAME] sections, resolution of a file's sender,
per-partner rule levels and acknowledgements, and the partner on every job."""

from __future__ import annotations

from pathlib import Path

import pytest

from edi_inbox import config
from edi_inbox.config import PartnerId
from edi_inbox.errors import ConfigError

PARTNERS = """
[partners]
unknown = "reject"
[partners.acme]
ids = ["ZZ:ACME FOODS", "01:123456789:WEST"]
ack = "none"
[partners.acme.rules]
line_count_mismatch = "error"
[partners.bolt]
ids = ["08:AAAAAAAAAA"]
ta1 = "always"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edi-inbox.toml"
    path.write_text(text)
    return path


# --- configuration ---------------------------------------------------------


def test_partner_sections_are_read(tmp_path):
    """Each [partners.NAME] gives its ids, ack, ta1 and rule levels over [rules]."""
    settings = config.load(write(tmp_path, PARTNERS), {})
    assert settings.partners.unknown == "reject"
    acme = settings.partners.get("acme")
    bolt = settings.partners.get("bolt")
    assert acme is not None and bolt is not None
    assert acme.ids == (PartnerId("ZZ", "ACME FOODS"), PartnerId("01", "123456789", "WEST"))
    assert (acme.ack, acme.ta1, bolt.ack, bolt.ta1) == ("none", "on-request", "997", "always")
    assert acme.rules.line_count_mismatch == "error"
    assert acme.rules.total_mismatch == "error"  # the rest as [rules] says
    assert bolt.rules == settings.rules


def test_partner_rules_start_from_the_rules_section(tmp_path):
    """A partner's levels override [rules] key by key, not the built-in defaults."""
    text = '[rules]\nduplicate_line_number = "off"\n' + PARTNERS
    settings = config.load(write(tmp_path, text), {})
    acme = settings.partners.get("acme")
    assert acme is not None and acme.rules.duplicate_line_number == "off"


def test_no_partners_accepts_everyone():
    """Without [partners] the policy is accept and no partner is known."""
    settings = config.load(None, {"XDG_STATE_HOME": "/nonexistent"})
    assert settings.partners == config.PartnersSettings()
    assert settings.partners.unknown == "accept"


def test_ack_defaults_follow_the_ack_section(tmp_path):
    """[ack] enabled = false makes a partner's default ack "none"."""
    text = (
        '[ack]\nenabled = false\n[partners.x]\nids = ["ZZ:X"]\n'
        '[partners.y]\nids = ["ZZ:Y"]\nack = "997"\n'
    )
    settings = config.load(write(tmp_path, text), {})
    assert [p.ack for p in settings.partners.partners] == ["none", "997"]


def test_unknown_policy_from_the_environment(tmp_path):
    """EDI_INBOX_PARTNERS_UNKNOWN sets the policy, and a bad value names the variable."""
    settings = config.load(None, {"EDI_INBOX_PARTNERS_UNKNOWN": "reject"})
    assert settings.partners.unknown == "reject"
    with pytest.raises(ConfigError, match=r"EDI_INBOX_PARTNERS_UNKNOWN.*accept, reject"):
        config.load(None, {"EDI_INBOX_PARTNERS_UNKNOWN": "maybe"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[partners.a]\nids = ["ZZ:ONE"]\n[partners.b]\nids = ["ZZ:TWO", "ZZ:ONE"]\n',
            r"\[partners.b\] key 'ids': 'ZZ:ONE' is claimed by partner 'a' too",
        ),
        (
            '[partners.a]\nids = ["ZZ:ONE"]\n[partners.a.rules]\nline_count = "error"\n',
            r"\[partners.a.rules\] key 'line_count' is not known; did you mean"
            r" 'line_count_mismatch'",
        ),
        (
            '[partners.a]\nids = ["ZZ:ONE"]\n[partners.a.rules]\ntotal_mismatch = "loud"\n',
            r"\[partners.a.rules\] key 'total_mismatch' must be one of error, warn, off",
        ),
        ('[partners.a]\nids = ["ACME"]\n', r"\[partners.a\] key 'ids': 'ACME' is not ISA05:ISA06"),
        (
            '[partners.a]\nids = ["ZZ:SIXTEEN-CHARS-XX"]\n',
            r"\[partners.a\] key 'ids': 'ZZ:SIXTEEN-CHARS-XX' is not",
        ),
        ('[partners.a]\nids = ["ZZ:A:B:C"]\n', r"\[partners.a\] key 'ids': 'ZZ:A:B:C' is not"),
        ("[partners.a]\nids = []\n", r"\[partners.a\] key 'ids' must name at least one"),
        (
            '[partners.a]\nids = ["ZZ:A"]\nack = "999"\n',
            r"\[partners.a\] key 'ack' must be one of 997, none",
        ),
        (
            '[partners.a]\nids = ["ZZ:A"]\nta1 = "yes"\n',
            r"\[partners.a\] key 'ta1' must be one of on-request",
        ),
        (
            '[partners.a]\nids = ["ZZ:A"]\nacks = "997"\n',
            r"\[partners.a\] key 'acks' is not known; did you mean 'ack'",
        ),
        (
            '[partners]\nunknwn = "reject"\n',
            r"\[partners\] key 'unknwn' is not known; did you mean 'unknown'",
        ),
        (
            '[partners]\nunknown = "drop"\n',
            r"\[partners\] key 'unknown' must be one of accept, reject",
        ),
        ('[partners."a b"]\nids = ["ZZ:A"]\n', r"\[partners.a b\]: a partner's name is"),
    ],
)
def test_config_errors_name_the_partner_and_the_key(tmp_path, text, message):
    """Every mistake in a partner section is refused with the partner, the key and the file."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as caught:
        config.load(path, {})
    assert str(path) in str(caught.value)
