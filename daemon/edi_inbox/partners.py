"""Which trading partner sent a file, from its envelopes (``[partners.NAME] ids``).

Pure: no I/O. An interchange is claimed by the partner listing its
ISA05:ISA06 with its GS02 (for each of its groups) or, failing that, without
a GS02: the longer id wins. A file is one partner's: interchanges or groups
claimed by different partners (or some by none) are refused together, as is
a sender no partner claims when ``[partners] unknown = "reject"``, and, in
the shared inbox, the sender of a partner that has a folder of its own
(``[partners.NAME] inbox``: only that folder vouches for it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .config import PartnerId, PartnerSettings, PartnersSettings, RuleSettings
from .x12.model import InterchangeSummary

UNKNOWN = "(no partner)"


@dataclass(frozen=True)
class Resolution:
    """The file's partner (None: a sender no partner claims, or a file in
    the shared inbox bearing the sender of a partner with a folder of its
    own: no partner's), or why the file is refused (``refused``: a reason
    naming the sender)."""

    partner: PartnerSettings | None = None
    refused: str | None = None


def sender_of(
    partners: PartnersSettings, interchange: InterchangeSummary, group_sender: str | None = None
) -> str:
    """How a sender is written in the configuration: ISA05:ISA06, with
    ``:GS02`` only for an ISA id whose users are told apart by GS02."""
    isa = (interchange.sender_qualifier, interchange.sender_id)
    split = group_sender is not None and isa in split_by_group(partners)
    return str(PartnerId(*isa, group_sender if split else None))


def split_by_group(partners: PartnersSettings) -> frozenset[tuple[str, str]]:
    """The ISA ids (ISA05, ISA06) some partner claims with a GS02
    (ISA05:ISA06:GS02: the id is shared, its users told apart by GS02). Every
    order under such an id, the catch-all partner's too, has its GS02 in its
    identity (``orders.SENDER_GROUP``): each may use the PO numbers another
    does."""
    return frozenset(
        (pid.qualifier, pid.sender)
        for partner in partners.partners
        for pid in partner.ids
        if pid.group_sender is not None
    )


def claimant(
    partners: PartnersSettings, interchange: InterchangeSummary, group_sender: str | None
) -> PartnerSettings | None:
    """The partner that claims this interchange (and group), if any."""
    isa = (interchange.sender_qualifier, interchange.sender_id)
    wanted = [PartnerId(*isa, group_sender)] if group_sender is not None else []
    for pid in [*wanted, PartnerId(*isa)]:
        for partner in partners.partners:
            if pid in partner.ids:
                return partner
    return None


def resolve(partners: PartnersSettings, interchanges: list[InterchangeSummary]) -> Resolution:
    """The partner of a file's interchanges, or the reason it is refused."""
    found: dict[str, tuple[PartnerSettings | None, str, str]] = {}  # name -> who, as said
    for interchange in interchanges:
        groups: list[str | None] = [g.sender for g in interchange.groups] or [None]
        for group_sender in groups:
            partner = claimant(partners, interchange, group_sender)
            name = partner.name if partner is not None else UNKNOWN
            who = (sender_of(partners, interchange, group_sender), sender_of(partners, interchange))
            found.setdefault(name, (partner, *who))
    if not found:
        return Resolution()
    if len(found) > 1:
        said = ", ".join(f"{sender} ({name})" for name, (_, sender, _) in found.items())
        return Resolution(refused=f"the file mixes senders of different partners: {said}")
    partner, sender, isa = next(iter(found.values()))
    if partner is not None and partner.inbox is not None:
        # Not that partner's file (only its folder vouches for it): nor its
        # answers, its outbox or its counts.
        return Resolution(
            refused=f"sender {sender} is partner {partner.name}'s, which uploads to its own"
            f" folder {partner.inbox}: a file with its sender anywhere else is refused"
            f" (edi-inbox process --partner {partner.name} runs one by hand)",
        )
    if partner is None and partners.unknown == "reject":
        return Resolution(
            refused=f"sender {isa} (ISA05:ISA06) is not a configured trading partner"
            ' and [partners] unknown = "reject"'
        )
    return Resolution(partner=partner)


def resolve_given(
    partners: PartnersSettings, partner: PartnerSettings, interchanges: list[InterchangeSummary]
) -> Resolution:
    """The file is known to come from ``partner`` (its folder, ``process
    --partner``): every sender in it must be that partner's — one of its ids,
    and not a group another partner's more specific id (with GS02) claims —
    or the file is refused with a reason naming both the partner and the sender."""
    for interchange in interchanges:
        groups: list[str | None] = [g.sender for g in interchange.groups] or [None]
        for group_sender in groups:
            owner = claimant(partners, interchange, group_sender)
            if owner is not None and owner.name == partner.name:
                continue
            sender = sender_of(partners, interchange, group_sender)
            if owner is not None:
                said = f"partner {owner.name}'s (ids {', '.join(str(p) for p in owner.ids)})"
            else:
                said = f"not one of its ids ({', '.join(str(pid) for pid in partner.ids)})"
            refused = f"the file is from partner {partner.name} but its sender {sender} is {said}"
            return Resolution(partner=partner, refused=refused)
    return Resolution(partner=partner)


def describe(partner: PartnerSettings, rules: RuleSettings) -> dict[str, Any]:
    """A partner's settings, JSON-ready; ``rules`` only where it differs from ``[rules]``."""
    own, common = dataclasses.asdict(partner.rules), dataclasses.asdict(rules)
    return {
        "name": partner.name,
        "ids": [str(pid) for pid in partner.ids],
        "ack": partner.ack,
        "ta1": partner.ta1,
        "outbox": str(partner.outbox) if partner.outbox is not None else None,
        "inbox": str(partner.inbox) if partner.inbox is not None else None,
        "processing": str(partner.processing) if partner.processing is not None else None,
        "max_file_bytes": partner.max_file_bytes,
        "rules": {key: level for key, level in own.items() if common[key] != level},
    }
