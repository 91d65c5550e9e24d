"""The one exception family a caller can act on: a stable machine code plus the field at fault."""

from __future__ import annotations


class DomainError(Exception):
    """A refusal with a stable `code` (e.g. `sender_not_registered`), mapped to problem+json.

    `status` is the HTTP status the control API answers with; `field` names the request field
    at fault when there is one (`to[3].number`, `text`); `retry_after` says when trying again
    can succeed.
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        field: str | None = None,
        status: int = 422,
        extra: dict[str, object] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field
        self.status = status
        self.extra = extra or {}
        self.retry_after = retry_after  # seconds, sent as Retry-After (429, 503)
