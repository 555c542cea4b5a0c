"""Checks the Mail settings share (a tenant or a preset's address domains are domain names)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import DomainNameValidator

_DOMAIN_NAME = DomainNameValidator(accept_idna=False)


def is_domain_name(value: str) -> bool:
    """An ASCII domain name such as contoso.onmicrosoft.com (IDNs in their xn-- form)."""
    try:
        _DOMAIN_NAME(value)
    except ValidationError:
        return False
    return True
