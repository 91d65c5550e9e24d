"""The published OpenAPI document is the contract: schemathesis, run against the control API
with a tenant key, finds no request the document allows that is refused for its form, no
answer that breaks the document, and no server error."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import Api

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261201
MAX_EXAMPLES = int(os.environ.get("TELGATE_CONTRACT_EXAMPLES", "50"))


def _keep(report: str, path: Path) -> None:
    path.write_text(report)


@pytest.mark.slow
async def test_schemathesis_finds_no_contract_failure(api: Api, tmp_path: Path) -> None:
    # The daemon's own limits (the fixture's 16 KB body limit is for the size tests).
    config = api.context.config
    api.context.config = dataclasses.replace(
        config, api=dataclasses.replace(config.api, max_body_bytes=1_048_576))
    tenant = await api.new_tenant()
    url = str(api.client.make_url("/v1/openapi.json"))
    st = Path(sys.executable).with_name("st")
    proc = await asyncio.create_subprocess_exec(
        str(st), "--config-file", str(ROOT / "tests" / "schemathesis.toml"), "run", url,
        "--checks", "all", "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED), "--workers", "1", "--no-color",
        # Revoking its own key would lock the run out; tests/integration cover revocation.
        "--exclude-operation-id", "delete_v1_api_keys_key_id",
        "-H", f"Authorization: Bearer {tenant.key}",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.contract_hooks"})
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=170)
    report = out.decode(errors="replace")
    _keep(report, Path(os.environ.get("TELGATE_CONTRACT_REPORT", tmp_path / "st.txt")))
    assert proc.returncode == 0, report[-20000:]
