"""A study's access attributes (department, labels): ``dicomguard study ...`` and ``/admin/studies`` call :class:`StudyService`."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from dicomguard.core.access import Action, StudyAccess, normalize_department, normalize_label
from dicomguard.core.events import SecurityConfigurationChanged
from dicomguard.core.service import Service
from dicomguard.errors import NotFoundError
from dicomguard.index.models import Study


class StudyService(Service):
    def set_access(
        self, study_uid: str, *, department: str | None = None, add_labels: Iterable[str] = (), remove_labels: Iterable[str] = ()
    ) -> StudyAccess:
        """Change a study's department or labels (``study-change``, decided on the study as it is now).

        Recorded as a Security Configuration alert in the transaction of the change.
        A refusal is recorded; it raises :class:`AccessDenied` when the principal may
        see the study, and :class:`NotFoundError` (like an unknown study) when not.
        """
        add, remove = {normalize_label(x) for x in add_labels}, {normalize_label(x) for x in remove_labels}
        if add & remove:
            raise ValueError("a label cannot be both added and removed")
        resource = self.access.study_resources([study_uid]).get(study_uid)
        if resource is None:
            raise NotFoundError(f"no study {study_uid}")
        decision = self.access.decide(Action.STUDY_CHANGE, resource)
        if not decision.allowed and study_uid not in self.access.visible_studies([study_uid])[0]:
            # A study the principal may not even see answers like one that does not exist.
            self.access.record_refusal(Action.STUDY_CHANGE, resource, decision.reason)
            raise NotFoundError(f"no study {study_uid}")
        self.access.enforce(Action.STUDY_CHANGE, resource, decision)
        with self.change() as s:
            study = s.get(Study, study_uid, with_for_update=True)
            if study is None:
                raise NotFoundError(f"no study {study_uid}")
            changes = []
            if department is not None:
                new = normalize_department(department) or None
                if new != study.department:
                    changes.append(f"department {study.department or '(none)'} -> {new or '(none)'}")
                    study.department = new
            labels = set(filter(None, (study.labels or "").split(",")))
            updated = (labels | add) - remove
            if updated != labels:
                text = ",".join(sorted(updated))
                if len(text) > 512:
                    raise ValueError("too many labels (at most 512 characters in all)")
                changes.append(f"labels {','.join(sorted(labels)) or '(none)'} -> {text or '(none)'}")
                study.labels = text or None
            if changes:
                self.record(s, SecurityConfigurationChanged(self.principal, f"study:{study_uid}", "; ".join(changes), datetime.now(UTC)))
        return self.access.index.study_access([study_uid])[study_uid][1]
