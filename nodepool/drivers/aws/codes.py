"""EC2's vCPU quota codes per instance family (Service Quotas, service "ec2"): pure.

Used by the driver's quota reads and by the config (`max-resources` caps vCPUs per code).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Instance family prefix -> (on-demand, spot) vCPU quota codes (Service Quotas, "ec2").
INSTANCE_QUOTA_CODES: Mapping[str, tuple[str, str]] = {
    **{f: ("L-1216C47A", "L-34B43A08") for f in "acdhimrtz"},
    "dl": ("L-6E869C2A", "L-85EED4F7"), "f": ("L-74FC7D96", "L-88CF9481"),
    "g": ("L-DB2E81BA", "L-3819A6DF"), "vt": ("L-DB2E81BA", "L-3819A6DF"),
    "u-": ("L-43DA4232", ""), "inf": ("L-1945791B", "L-B5D1601B"),
    "p": ("L-417A185B", "L-7212CCBC"), "x": ("L-7295265B", "L-E3A00192"),
    "trn": ("L-2C3B7624", "L-6B0D517C"), "hpc": ("L-F7808C92", ""),
}


def quota_code(instance_type: str, spot: bool = False) -> str | None:
    """The vCPU quota code of an instance type ("m5.large" -> L-1216C47A), longest prefix."""
    family = re.match(r"[a-z]+-?", instance_type or "")
    if family is None:
        return None
    name = family.group(0)
    for length in range(len(name), 0, -1):
        codes = INSTANCE_QUOTA_CODES.get(name[:length])
        if codes:
            return codes[1 if spot else 0] or None
    return None


def vcpu_cap(max_resources: Mapping[str, int], labels: Iterable[tuple[str, bool]]
             ) -> float | None:
    """The smallest `max-resources` limit among the quota codes of `labels`
    ((instance type, spot) pairs), or None when none of them is limited."""
    caps = [max_resources[code] for itype, spot in labels
            if (code := quota_code(itype, spot)) in max_resources]
    return min(caps) if caps else None
