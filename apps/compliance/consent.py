"""Consent records: who agreed to what, when, and where the decision came from (GDPR Art. 7, LGPD Art. 8).

Failure modes prevented:
- A consent history rewritten after the fact: decisions are only added, never updated; the newest row per
  (subject, purpose) is the current state.
- The same person recorded under two spellings (`Ana@X.com` and `ana@x.com`, `+55 11 9...` and `55119...`):
  subjects are normalised by `apps.compliance.gdpr.subject_parse` before they are stored or looked up.
- Personal data in the audit log: the event names the record id and purpose, never the subject.
"""

from __future__ import annotations

import re
from datetime import datetime

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from apps.compliance.gdpr import subject_parse, subject_spellings
from apps.compliance.models import CONSENT_SOURCE_MAX_LENGTH, PURPOSE_MAX_LENGTH, ConsentRecord
from apps.compliance.services import audit_record, audit_text_clean

# Purposes are machine names a bot or the console agrees on ("marketing", "analytics", "whatsapp-optin").
PURPOSE_RE = re.compile(r"^[a-z][a-z0-9_.-]*$")


def consent_record(*, subject: str, purpose: str, granted: bool, source: str = "",
                   at: datetime | None = None, request=None) -> ConsentRecord:
    """Record that `subject` granted (or withdrew) consent for `purpose`. ValueError on a bad purpose,
    SubjectError on a bad subject; nothing is written then."""
    parsed = subject_parse(subject)
    if not PURPOSE_RE.match(purpose or "") or len(purpose) > PURPOSE_MAX_LENGTH:
        raise ValueError(f"purpose {purpose!r} must be a lower-case name (letters, digits, _ . -) of at most "
                         f"{PURPOSE_MAX_LENGTH} characters, e.g. 'marketing'")
    if not isinstance(granted, bool):
        raise ValueError("granted must be true or false")
    with transaction.atomic():
        record = ConsentRecord.objects.create(
            subject_kind=parsed.kind, subject=parsed.value, purpose=purpose, granted=granted,
            at=at or timezone.now(), source=audit_text_clean(source, max_length=CONSENT_SOURCE_MAX_LENGTH))
        audit_record(action="consent.granted" if granted else "consent.withdrawn", object_type="consent",
                     object_id=str(record.pk), summary={"purpose": purpose}, request=request)
    return record


def consent_current(*, subject: str, purpose: str) -> bool | None:
    """Whether `subject` consents to `purpose` now: the latest decision, or None when never asked."""
    spellings = subject_spellings(subject_parse(subject))
    latest = ConsentRecord.objects.filter(subject__in=spellings, purpose=purpose).first()
    return None if latest is None else latest.granted


def consent_history(*, subject: str) -> QuerySet[ConsentRecord]:
    """Every decision of `subject`, newest first."""
    return ConsentRecord.objects.filter(subject__in=subject_spellings(subject_parse(subject)))
