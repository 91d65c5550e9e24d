"""Configuration: every problem is reported with its key; environment overrides; secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_config, redacted


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "telgate.toml"
    p.write_text(text, encoding="utf-8")
    return p


def problems_of(path: Path | None, env: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as err:
        load_config(path, env or {})
    return {p.key: p.message for p in err.value.problems}


def test_unknown_key_is_named_with_the_known_keys(tmp_path: Path) -> None:
    found = problems_of(write(tmp_path, "[api]\nprot = 9000\n"))
    assert "api.prot" in found
    assert "unknown key" in found["api.prot"] and "port" in found["api.prot"]


def test_bad_type_names_key_expected_and_got(tmp_path: Path) -> None:
    found = problems_of(write(tmp_path, '[api]\nport = "eighty"\n'))
    assert found == {"api.port": "expected an integer, got a string ('eighty')"}


def test_missing_required_key_in_a_carrier_is_reported(tmp_path: Path) -> None:
    found = problems_of(write(tmp_path, '[[smpp.carriers]]\nname = "skt"\nhost = "h"\nport = 2775\n'))
    assert found["smpp.carriers[0].system_id"] == "is required"
    assert found["smpp.carriers[0].password"] == "is required"


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    text = 'bogus = 1\n[api]\nport = 70000\n[log]\nlevel = "loud"\n'
    found = problems_of(write(tmp_path, text))
    assert set(found) == {"bogus", "api.port", "log.level"}
    assert found["api.port"] == "must be at most 65535, got 70000"


def test_environment_overrides_file_and_is_typed(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[api]\nport = 9000\n"),
                      {"TELGATE_API__PORT": "9100", "TELGATE_STATE_DIR": "./var",
                       "HOME": "/root"})
    assert cfg.api.port == 9100
    assert cfg.state_dir == Path("var")


def test_environment_problem_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, {"TELGATE_API__PORT": "x"})
    (problem,) = err.value.problems
    assert problem.key == "api.port" and "TELGATE_API__PORT" in problem.source


def test_invalid_toml_is_one_clear_problem(tmp_path: Path) -> None:
    found = problems_of(write(tmp_path, "[api\n"))
    assert "not valid TOML" in found["-"]


def test_secrets_are_redacted(tmp_path: Path) -> None:
    text = ('[database]\ndsn = "postgresql://u:hunter2@db/telgate"\n'
            '[[smpp.carriers]]\nname="skt"\nhost="h"\nport=2775\nsystem_id="a"\npassword="pw1"\n')
    shown = repr(redacted(load_config(write(tmp_path, text), {})))
    assert "hunter2" not in shown and "pw1" not in shown and "***" in shown


def test_example_file_is_valid() -> None:
    example = Path(__file__).parents[2] / "config" / "telgate.example.toml"
    load_config(example, {})


def test_reserved_variables_are_not_configuration_keys() -> None:
    cfg = load_config(None, {"TELGATE_CONFIG": "/etc/telgate/telgate.toml", "TELGATE_KEY": "tgk_x",
                             "TELGATE_TEST_DSN": "postgresql://x", "TELGATE_API__PORT": "9001"})
    assert cfg.api.port == 9001
