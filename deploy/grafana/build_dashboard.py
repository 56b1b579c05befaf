"""Build the callqa Grafana dashboard with the Grafana Foundation SDK and write it to dashboards/callqa-quality.json.

    python deploy/grafana/build_dashboard.py          # rewrite the JSON
    python deploy/grafana/build_dashboard.py --check  # exit 1 when the JSON is not what this script builds

Panels: MOS and fault rates over time per carrier, agent and campaign from Prometheus (callqa's per-group
gauges, see docs/alerts.md), open incidents, and the worst calls of the time range from the call index in
PostgreSQL, each call linking to the service's call page (``${callqa_url}/ui/calls/<id>``). Fixed uids: the
dashboard ``callqa-quality``, the data sources ``callqa-prometheus`` and ``callqa-postgres`` (provisioning/).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

UID = "callqa-quality"
PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid="callqa-prometheus")
POSTGRES = model.DataSourceRef(type_val="grafana-postgresql-datasource", uid="callqa-postgres")
OUT = Path(__file__).parent / "dashboards" / "callqa-quality.json"
FAULTS = {"one_way_audio": "one-way audio", "no_media": "no media", "dead_air": "dead air", "low_mos": "low MOS"}
DIMENSIONS = ("carrier", "agent", "campaign")

# the worst calls of the dashboard's time range, from the index columns of callqa's reports table (store.py;
# kind '' marks a report that version could not read); $__unixEpochFilter is Grafana's macro for epoch seconds
WORST_CALLS_SQL = """SELECT id, to_timestamp(t) AS "time", verdict, carrier, agent, campaign, site, codec,
       round(mos::numeric, 2) AS mos, round(loss_pct::numeric, 2) AS loss_pct,
       round(jitter_ms::numeric, 1) AS jitter_ms, trim(both ',' from findings) AS findings
FROM reports
WHERE $__unixEpochFilter(t) AND kind != '' AND verdict IN ('degraded', 'failed')
ORDER BY severity DESC, reports.mos ASC NULLS LAST, t DESC
LIMIT 200"""


class SqlQuery(cogvariants.Dataquery):
    """A raw SQL target of Grafana's SQL data sources (PostgreSQL; the SDK has no builder for it)."""

    def __init__(self, ref_id: str, sql: str, datasource: model.DataSourceRef) -> None:
        self.ref_id, self.sql, self.datasource = ref_id, sql, datasource

    def to_json(self) -> dict[str, Any]:
        return {"refId": self.ref_id, "datasource": self.datasource.to_json(), "rawSql": self.sql,
                "rawQuery": True, "editorMode": "code", "format": "table"}  # fmt: skip


class Sql(cogbuilder.Builder[SqlQuery]):
    def __init__(self, ref_id: str, sql: str, datasource: model.DataSourceRef) -> None:
        self._query = SqlQuery(ref_id, sql, datasource)

    def build(self) -> SqlQuery:
        return self._query


def prom(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(PROMETHEUS)


def _faults_panel(dim: str) -> timeseries.Panel:
    panel = (timeseries.Panel().title(f"Fault rates by {dim}").datasource(PROMETHEUS).unit("percentunit").min(0)
             .description(f"Share of each {dim}'s calls with the fault over callqa's trailing window "
                          "(callqa_group_fault_ratio); groups beyond the top N are summed as 'other'.")
             .height(8).span(12))  # fmt: skip
    for i, (fault, name) in enumerate(FAULTS.items()):
        expr = f'callqa_group_fault_ratio{{dimension="{dim}", fault="{fault}"}}'
        panel = panel.with_target(prom(expr, f"{{{{group}}}} {name}", chr(ord("A") + i)))
    return panel


def _mos_panel(dim: str) -> timeseries.Panel:
    return (timeseries.Panel().title(f"Median MOS by {dim}").datasource(PROMETHEUS).min(1).max(5).height(8).span(12)
            .description(f"Median call MOS (its lowest leg) of each {dim} over callqa's trailing window.")
            .with_target(prom(f'callqa_group_mos{{dimension="{dim}", quantile="0.5"}}', "{{group}}"))
            .with_target(prom(f'callqa_group_mos{{dimension="{dim}", quantile="0.1"}}', "{{group}} p10", "B"))
    )  # fmt: skip


def build() -> dict[str, Any]:
    board = (
        dash.Dashboard("callqa: call quality by carrier, agent and campaign").uid(UID).tags(["callqa", "voip"])
        .description("MOS and fault rates over time per group (Prometheus), open incidents, and the worst calls "
                     "(PostgreSQL call index) linking to callqa's call page.")
        .refresh("1m").time("now-24h", "now").timezone("utc").editable()
        .with_variable(dash.TextBoxVariable("callqa_url").label("callqa URL").default_value("http://127.0.0.1:8084")
                       .description("Base URL of the callqa service, for links to its call pages"))
        .with_row(dash.Row("Overview"))
        .with_panel(stat.Panel().title("Open incidents").datasource(PROMETHEUS).height(4).span(6)
                    .with_target(prom("sum(callqa_incidents_open)", "open")))
        .with_panel(stat.Panel().title("Calls in the window").datasource(PROMETHEUS).height(4).span(6)
                    .with_target(prom('sum(callqa_group_calls{dimension="carrier"})', "calls")))
        .with_panel(timeseries.Panel().title("Worst group per fault").datasource(PROMETHEUS).unit("percentunit")
                    .height(4).span(12)
                    .with_target(prom("dimension_fault:callqa_group_fault_ratio:max", "{{dimension}} {{fault}}")))
    )  # fmt: skip
    for dim in DIMENSIONS:
        board = board.with_row(dash.Row(f"By {dim}")).with_panel(_faults_panel(dim)).with_panel(_mos_panel(dim))
    board = board.with_panel(
        timeseries.Panel().title("Packet loss p95 by carrier").datasource(PROMETHEUS).unit("percent").height(8)
        .span(12).with_target(prom('callqa_group_loss_percent{dimension="carrier", quantile="0.95"}', "{{group}}"))
    ).with_panel(
        timeseries.Panel().title("Jitter p95 by carrier").datasource(PROMETHEUS).unit("ms").height(8).span(12)
        .with_target(prom('callqa_group_jitter_ms{dimension="carrier", quantile="0.95"}', "{{group}}"))
    )  # fmt: skip
    link = model.DynamicConfigValue(id_val="links", value=[
        {"title": "Open the call in callqa", "url": "${callqa_url}/ui/calls/${__value.raw}", "targetBlank": True},
    ])  # fmt: skip
    board = board.with_row(dash.Row("Calls")).with_panel(
        table.Panel().title("Worst calls").datasource(POSTGRES).height(12).span(24)
        .description("Degraded and failed calls of the time range, worst first; the id opens callqa's call page.")
        .with_target(Sql("A", WORST_CALLS_SQL, POSTGRES))
        .override_by_name("id", [link])
    )  # fmt: skip
    return json.loads(json.dumps(board.build(), cls=JSONEncoder, sort_keys=True))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv[1:]:
        sys.exit(0 if OUT.read_text() == text else 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
