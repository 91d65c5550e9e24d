"""MM7 carrier configuration: the annotated example is valid as written, required keys and
bad values are named, secrets are redacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_config, redacted
from handlers.messages.mms_dispatch import MmsCarrier

EXAMPLE = Path(__file__).parents[2] / "config" / "telgate.example.toml"


def _example_carrier() -> str:
    """The commented [[mm7.carriers]] table of the example file, uncommented."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = lines.index("# [[mm7.carriers]]")
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line[2:])
    return "\n".join(block) + "\n"


def test_the_documented_carrier_table_loads_with_its_values(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(_example_carrier(), encoding="utf-8")
    (c,) = load_config(path, {}).mm7.carriers
    assert (c.name, c.vasp_id, c.vas_id, c.schema_version) == (
        "skt-mms", "VASP0001", "VAS01", "REL-5-MM7-1-2")
    assert c.charset == "ks_c_5601-1987" and c.service_code == "SVC001"
    assert c.soap_headers == {"OriginCode": "123456789"}
    assert c.http_headers == {"X-Service-Code": "SVC001"}
    assert c.retry_status_codes == [3000, 3001, 4006]
    MmsCarrier(c)  # a usable client configuration


def test_required_keys_and_bad_values_are_named(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[[mm7.carriers]]\nname = "kt"\nschema_version = "REL-7"\n'
                    'text_transfer_encoding = "7bit"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    found = {p.key: p.message for p in err.value.problems}
    assert found["mm7.carriers[0].url"] == "is required"
    assert found["mm7.carriers[0].vasp_id"] == "is required"
    assert "REL-6-MM7-1-4" in found["mm7.carriers[0].schema_version"]
    assert "base64" in found["mm7.carriers[0].text_transfer_encoding"]


def test_an_unknown_charset_is_refused_when_the_carrier_is_built(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[[mm7.carriers]]\nname = "kt"\nurl = "http://m/mm7"\nvasp_id = "V"\n'
                    'charset = "klingon"\n', encoding="utf-8")
    (c,) = load_config(path, {}).mm7.carriers
    with pytest.raises(ValueError, match="klingon"):
        MmsCarrier(c)


def test_mm7_secrets_are_redacted(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(_example_carrier(), encoding="utf-8")
    shown = repr(redacted(load_config(path, {})))
    assert "secret" not in shown and "***" in shown
