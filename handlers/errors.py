"""The one exception family a caller can act on, and the registry of every machine code.

Each code is declared once in `CODES` with its HTTP status and a one-line meaning; routes name
the codes they can answer and the OpenAPI document lists them per operation. `docs/errors.md`
is generated from this list (`python -m handlers.errors > docs/errors.md`). A `DomainError`
with a code that is not registered cannot be built: the mistake shows in the first test that
reaches it, not in a portal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.StrEnum):
    """Why a request was refused: its form breaks the published document, or a rule refused it."""

    REQUEST = "request"  # the request does not follow the document (shape, type, size, media type)
    REFUSAL = "refusal"  # well-formed, refused by a rule, the account's state or the service


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """A stable machine code, the HTTP status it is answered with, and what it means."""

    code: str
    status: int
    meaning: str
    kind: Kind = Kind.REFUSAL


def _r(code: str, status: int, meaning: str) -> ErrorCode:
    return ErrorCode(code, status, meaning, Kind.REQUEST)


def _x(code: str, status: int, meaning: str) -> ErrorCode:
    return ErrorCode(code, status, meaning, Kind.REFUSAL)


_ALL: tuple[ErrorCode, ...] = (
    # -- the request itself ---------------------------------------------------------------------
    _r("malformed_json", 400, "The body is not valid JSON, or not a JSON object."),
    _r("invalid_parameter", 400, "A path, query or header parameter breaks its declared schema."),
    _r("invalid_cursor", 400, "The cursor is not one a list of this kind gives."),
    _r("invalid_field", 422, "A body field breaks its declared schema (type, range, pattern, "
                             "length, enum, unknown field)."),
    _r("malformed_multipart", 400, "The multipart/form-data body does not parse."),
    _x("forbidden_character", 422, "Text cannot contain NUL (U+0000) or lone surrogates "
                                   "(U+D800-U+DFFF), which PostgreSQL cannot store; `field` "
                                   "names where."),
    _r("malformed_body", 400, "The body could not be read (broken chunked encoding or "
                              "compression)."),
    _r("json_too_deep", 400, "The JSON body nests deeper than 32 levels."),
    _x("body_timeout", 408, "The request body did not arrive within api.body_timeout_seconds."),
    _x("client_closed_request", 499, "The client closed the connection before the answer "
                                     "(never sent; counted apart from server errors)."),
    _r("missing_file", 400, "A multipart upload has no `file` part."),
    _r("body_too_large", 413, "The request body, an uploaded file, or what a spreadsheet "
                             "inflates to, is over its limit."),
    _r("unsupported_media_type", 415, "The request body is not in the media type the operation "
                                      "takes (JSON or multipart/form-data)."),
    _r("method_not_allowed", 405, "The path exists but not with this method (see `Allow`)."),
    _r("not_found", 404, "No such resource for this tenant (another tenant's answers the same)."),
    _r("unauthenticated", 401, "No `Authorization: Bearer` key was sent."),
    _r("invalid_key", 401, "The API key is unknown or revoked."),
    _x("missing_scope", 403, "The API key's scope does not cover this operation; "
                             "`required_scope` names the scope it needs (read < send < manage "
                             "< admin)."),
    _x("rate_limited", 429, "Over a rate limit of the key or the tenant; `budget` names it and "
                            "`Retry-After` says when to retry (docs/security.md)."),
    _x("internal_error", 500, "A failure on our side; the log has the request id."),
    _x("database_unavailable", 503, "The database is not reachable; retry after `Retry-After`."),
    _x("events_unavailable", 503, "The event stream is not running on this instance yet; "
                                  "reconnect (with `Last-Event-ID`) after `Retry-After`."),
    # -- numbers (handlers.numbers) -------------------------------------------------------------
    _x("empty", 422, "No number, or no digits, was given."),
    _x("not_digits", 422, "The number has characters that are not digits or separators."),
    _x("international", 422, "A number outside Korea (+82); only Korean numbers are accepted."),
    _x("too_short", 422, "Too few digits for a phone number."),
    _x("too_long", 422, "Too many digits for a Korean number, or text over the MMS limit."),
    _x("invalid_number", 422, "Not a valid Korean phone number."),
    _x("bad_length", 422, "The number has the wrong length for its prefix."),
    _x("missing_area_code", 422, "A landline number without its area code."),
    _x("not_callable", 422, "A pager prefix (012-015) that cannot send or receive messages."),
    _x("not_mobile", 422, "A recipient of a text message must be a mobile number."),
    _x("personal_number", 422, "050 personal numbers cannot be sender numbers."),
    _x("premium_rate", 422, "060 premium-rate numbers cannot be sender numbers."),
    _x("special_number", 422, "Short special numbers (1xx) cannot be sender numbers."),
    # -- sender numbers and opt-outs ------------------------------------------------------------
    _x("already_registered", 409, "The sender number is already registered to this tenant."),
    _x("quota_exceeded", 422, "The tenant has as many sender numbers as its quota allows."),
    _x("invalid_quota", 422, "A sender-number quota must be a positive whole number."),
    _x("import_has_errors", 422, "A committing import has rows that are not ok and "
                                 "`skip_invalid` was not set; every row's verdict is in `rows`."),
    _x("invalid_scope", 422, "The opt-out scope is `all` or `ad`."),
    # -- spreadsheets (handlers.spreadsheets) ---------------------------------------------------
    _x("unsupported_type", 422, "The upload is not xls, xlsx or a csv/tsv text we can decode."),
    _x("too_many_rows", 422, "The sheet has more rows than an import reads."),
    _x("too_many_columns", 422, "The sheet has more columns than an import reads."),
    _x("bad_sheet", 422, "No sheet of that name or position in the file."),
    _x("corrupt_file", 422, "The file is damaged or not what its content claims."),
    _x("invalid_column", 422, "A column is a letter (A, B, …) or a 1-based number, within the "
                              "sheet's readable columns."),
    _x("invalid_first_row", 422, "`first_row` is a row number from 1."),
    # -- messages (handlers.messages) -----------------------------------------------------------
    _x("sender_not_registered", 422, "`from` is not a registered sender number of this tenant."),
    _x("no_recipients", 422, "The message has no recipients."),
    _x("too_many_recipients", 422, "More recipients than one request may carry."),
    _x("invalid_recipients", 422, "Some recipients are not valid; each is listed in `errors` "
                                  "with its field and code."),
    _x("test_needs_one_recipient", 422, "A test send goes to exactly one number."),
    _x("template_not_found", 422, "`template_id` names no template of this tenant."),
    _x("invalid_template", 422, "The template text does not parse."),
    _x("template_exists", 409, "A template with this name exists."),
    _x("invalid_send_at", 422, "`send_at` is not an RFC 3339 time with a time zone offset."),
    _x("send_at_in_past", 422, "`send_at` is in the past by more than a minute; omit it to send "
                               "now."),
    _x("send_at_too_far", 422, "`send_at` is more than 6 months ahead."),
    _x("invalid_images", 422, "An image is not valid base64."),
    _x("no_route", 422, "No carrier route for this message type is configured for the tenant."),
    _x("unencodable_character", 422, "A character the carriers' character set cannot carry."),
    _x("empty_text", 422, "The message has no text."),
    _x("too_long_for_sms", 422, "The text is over the tenant's SMS limit and `type` is sms."),
    _x("subject_not_allowed", 422, "An SMS carries no subject; send `\"type\": \"lms\"` to send "
                                   "a short text with a subject as LMS."),
    _x("subject_too_long", 422, "The subject is over 40 bytes."),
    _x("image_not_jpeg", 422, "An image is not a baseline JPEG."),
    _x("image_too_large", 422, "An image is over the carriers' size or resolution limit."),
    _x("too_many_images", 422, "More than 3 images."),
    _x("images_not_allowed", 422, "Images were given for a type that carries none (sms, lms)."),
    _x("image_required", 422, "Type mms needs at least one image."),
    _x("unknown_variable", 422, "The text uses a variable no recipient defines."),
    _x("missing_variable", 422, "A recipient lacks a variable the text uses."),
    _x("ad_optout_missing", 422, "An advertisement needs the tenant's 080 opt-out number and "
                                 "line (PATCH /v1/tenant/settings)."),
    _x("ad_optout_mismatch", 422, "The text names an opt-out number that is not the tenant's."),
    _x("ad_optout_not_last", 422, "The opt-out line must end the advertisement."),
    _x("ad_night_time", 422, "Advertising between 21:00 and 08:00 Korean time needs the "
                             "recipients' consent (`night_consent`)."),
    _x("message_canceled", 409, "The message was canceled."),
    _x("dispatch_started", 409, "Dispatch has started; the message can no longer be changed."),
    _x("period_too_long", 422, "A search or export covers at most one year (366 days)."),
    _x("invalid_period", 422, "`until` must be after `since`."),
    _x("invalid_time", 422, "A time is not an RFC 3339 time or a date (YYYY-MM-DD)."),
    _x("export_too_large", 422, "More rows than one export holds; choose a shorter period."),
    _x("invalid_idempotency_key", 400, "The Idempotency-Key header is longer than 200 "
                                       "characters."),
    _x("idempotency_conflict", 409, "The Idempotency-Key was used with a different body."),
    # -- verification codes (handlers.verify) ---------------------------------------------------
    _x("opted_out", 422, "The recipient asked to receive no messages (080 opt-out)."),
    _x("template_without_code", 422, "A verification template must contain `{code}`."),
    _x("verification_code_mismatch", 422, "The code is wrong; `attempts_left` says how many "
                                          "tries remain before the number is locked."),
    _x("verification_locked", 429, "Too many wrong codes: the number is locked (no check, no new "
                                   "code) until `Retry-After`."),
    _x("verification_expired", 410, "The code is past its validity; start a new verification."),
    _x("verification_closed", 409, "The verification is already approved, failed or canceled "
                                   "(`status` says which)."),
    _x("verification_resend_too_soon", 429, "A new code within the resend cooldown; wait "
                                            "`Retry-After` seconds."),
    _x("verification_send_limit", 429, "This number received as many codes as allowed in the "
                                       "window; wait `Retry-After` seconds."),
    _x("verification_tenant_limit", 429, "The account sent as many codes this hour as allowed."),
    # -- live calls (handlers.calls.control_routes) ----------------------------------------------
    _x("call_not_found", 404, "No such call in progress for this tenant (it may have ended)."),
    _x("call_not_answered", 409, "The call is not answered by an agent (ringing, in the IVR "
                                 "or ending), so this command does not apply."),
    _x("not_a_customer_call", 409, "An internal call has no customer to block."),
    _x("media_not_anchored", 409, "The call's audio does not pass through the gateway (media "
                                  "anchoring is off), so nothing can be played into it."),
    _x("calls_unavailable", 503, "SIP is not running on this instance."),
    _x("transfer_target_unavailable", 409, "The extension to transfer to cannot take the call "
                                           "now (offline, do-not-disturb, not registered, or "
                                           "already the call's)."),
    _x("transfer_target_missing", 422, "A transfer names either `to` (blind) or "
                                       "`consult_call_id` (attended), one of them."),
    _x("not_a_consultation", 409, "The second call is not the agent's answered call to "
                                  "another extension, so it cannot complete a transfer."),
    _x("call_not_ringing", 409, "The call is not ringing (answered, ended, in the IVR, or an "
                                "outgoing call), so it cannot be picked up."),
    _x("agent_unavailable", 409, "The agent's extension cannot be rung now (offline, "
                                 "do-not-disturb or not registered)."),
    _x("no_trunk", 503, "No trunk to call out through is configured for this tenant."),
    _x("call_busy", 409, "The call is renegotiating its media (a re-INVITE is open); try again "
                         "in a moment."),
    # -- media (handlers.media) -----------------------------------------------------------------
    _x("media_unavailable", 503, "The media process (or rtpengine) is not running or did not "
                                 "answer."),
    _x("media_bad_request", 422, "The media process refused a malformed command."),
    _x("media_unknown_call", 404, "The media process has no session for this call."),
    _x("media_call_exists", 409, "The media process already has a session for this call."),
    _x("media_ports_exhausted", 503, "No free RTP port pair in the configured range."),
    _x("media_bad_sdp", 422, "An SDP body the media side cannot anchor (no audio, an "
                             "unresolvable host); the call engine answers SIP 488."),
    _x("media_prompt_unavailable", 422, "The prompt file cannot be played: missing, unreadable, "
                                        "empty or too large (`detail` says which)."),
    _x("media_refused", 503, "rtpengine refused an NG command or answered without SDP (its "
                             "reason in `detail`)."),
    _x("recording_not_found", 404, "No such recording for this tenant."),
    _x("recording_in_progress", 409, "The call is still being recorded: its audio can be "
                                     "fetched, and the recording deleted, once the call ends."),
    _x("recording_unavailable", 410, "The recording has no audio to serve: recording it failed "
                                     "(`status` failed, `error` says why) or its file is gone."),
    _x("range_not_satisfiable", 416, "The `Range` starts past the end of the file (or asks for "
                                     "no byte); `Content-Range: bytes */<size>` gives its size."),
    _x("recording_storage_error", 500, "The recording's file could not be read or deleted (a "
                                       "storage fault, in the server log); nothing was deleted."),
    _x("invalid_recording_policy", 422, "`recording_policy` is all, none or exclude_internal."),
    # -- IVR prompts (handlers.ivr.prompts) -----------------------------------------------------
    _x("prompts_unavailable", 503, "Prompt storage is not running on this instance."),
    _x("invalid_audio", 422, "The upload is not a WAV file we can read; `detail` says why "
                             "(unsupported format such as MP3 or ADPCM, truncated data chunk, "
                             "sample rate outside 8-48 kHz, more than two channels)."),
    _x("prompt_too_long", 422, "A prompt lasts at most 120 seconds."),
    _x("prompt_too_short", 422, "A prompt lasts at least 0.1 seconds."),
    _x("prompt_storage_error", 500, "The prompt's files could not be read or written (a "
                                    "storage fault, in the server log)."),
    # -- webhooks -------------------------------------------------------------------------------
    _x("invalid_url", 422, "A webhook URL is an absolute http(s) URL without credentials."),
    _x("forbidden_target", 422, "The webhook URL's host is, or resolves to, an address telgate "
                                "does not call (loopback, private, link-local, multicast, "
                                "reserved) and no `webhooks.allow_networks` range admits it."),
    _x("too_many_webhooks", 409, "The tenant has as many webhooks as allowed (20)."),
    # -- tenants, keys, SP IDs, settings --------------------------------------------------------
    _x("invalid_name", 422, "A name is empty or too long."),
    _x("tenant_exists", 409, "A tenant with this name exists."),
    _x("tenant_not_found", 404, "No tenant with this id or name."),
    _x("invalid_sp_id", 422, "An SP ID is 1-32 of A-Z a-z 0-9 _ . -."),
    _x("sp_id_taken", 409, "The SP ID belongs to another tenant."),
    _x("sp_id_exists", 409, "The SP ID is already this tenant's."),
    _x("invalid_setting", 422, "A tenant setting has a value it cannot take; `field` names it."),
    _x("optout_number_taken", 409, "Another tenant uses this 080 opt-out number."),
    # -- calls (handlers.calls) -----------------------------------------------------------------
    _x("invalid_extension", 422, "An extension is 1 to 4 digits."),
    _x("invalid_password", 422, "A SIP password is 8-128 printable characters."),
    _x("extension_exists", 409, "The extension exists."),
    # -- the callback list (handlers.ivr.callbacks) ---------------------------------------------
    _x("callback_not_found", 404, "No such callback entry for this tenant."),
    # -- departments and statistics (handlers.departments, handlers.calls.search) ---------------
    _x("department_exists", 409, "A department with this name exists."),
    _x("unknown_member", 422, "An extension or SP ID named as a department's member is not "
                              "the tenant's; `field` names which."),
)

CODES: dict[str, ErrorCode] = {e.code: e for e in _ALL}
assert len(CODES) == len(_ALL), "an error code is declared twice"


def lookup(code: str) -> ErrorCode:
    """The registered code; a code nobody declared is a programming error."""
    try:
        return CODES[code]
    except KeyError:
        raise LookupError(f"error code {code!r} is not in handlers.errors.CODES") from None


class DomainError(Exception):
    """A refusal with a registered `code` (e.g. `sender_not_registered`), mapped to problem+json.

    The HTTP status comes from the registry (`status=`, if given, must agree with it); `field`
    names the request field at fault when there is one (`to[3].number`, `text`); `retry_after`
    says when trying again can succeed (sent as `Retry-After`).
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        field: str | None = None,
        status: int | None = None,
        extra: dict[str, object] | None = None,
        retry_after: int | None = None,
    ) -> None:
        registered = lookup(code)
        if status is not None and status != registered.status:
            raise ValueError(f"error code {code!r} is registered with status "
                             f"{registered.status}, raised with {status}")
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field
        self.status = registered.status
        self.extra = extra or {}
        self.retry_after = retry_after  # seconds, sent as Retry-After (429, 503)


def markdown() -> str:
    """docs/errors.md: every code with its status and meaning."""
    lines = [
        "# Error codes",
        "",
        "<!-- Generated from handlers/errors.py by `python -m handlers.errors > docs/errors.md`;"
        " a test fails when this file is stale. -->",
        "",
        "Every refusal of the control API is an `application/problem+json` body with a stable "
        "`code`, the HTTP `status`, a human `detail` and, when one field is at fault, `field` "
        "(`to[3].number`, `text`). The OpenAPI document (`GET /v1/openapi.json`) lists under "
        "each operation the codes it can answer.",
        "",
        "Kind `request`: the request does not follow the published document (fix the client). "
        "Kind `refusal`: a well-formed request refused by a rule, the account's state or the "
        "service.",
        "",
        "| code | status | kind | meaning |",
        "|---|---|---|---|",
    ]
    for e in _ALL:
        lines.append(f"| `{e.code}` | {e.status} | {e.kind.value} | {e.meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
