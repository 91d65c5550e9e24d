"""MM7 schema versions: the namespace of each and the `MM7Version` value it is sent with."""

from __future__ import annotations

import enum

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
_SCHEMA_BASE = "http://www.3gpp.org/ftp/Specs/archive/23_series/23.140/schema/"


class SchemaVersion(enum.StrEnum):
    """The XML schema (namespace) a carrier's MMSC speaks."""

    REL_5_MM7_1_0 = "REL-5-MM7-1-0"
    REL_5_MM7_1_1 = "REL-5-MM7-1-1"
    REL_5_MM7_1_2 = "REL-5-MM7-1-2"
    REL_5_MM7_1_3 = "REL-5-MM7-1-3"
    REL_6_MM7_1_4 = "REL-6-MM7-1-4"

    @property
    def namespace(self) -> str:
        """The XML namespace URI of this schema."""
        return _SCHEMA_BASE + self.value

    @property
    def release(self) -> int:
        """5 or 6: the 3GPP release the schema belongs to."""
        return int(self.value[4])

    @property
    def default_mm7_version(self) -> str:
        """The `MM7Version` most peers send with this schema (carriers may ask for another)."""
        return "6.8.0" if self.release == 6 else "5.3.0"

    @property
    def report_has_status_text(self) -> bool:
        """DeliveryReportReq carries StatusText from REL-5-MM7-1-1 on."""
        return self is not SchemaVersion.REL_5_MM7_1_0


BY_NAMESPACE: dict[str, SchemaVersion] = {v.namespace: v for v in SchemaVersion}
