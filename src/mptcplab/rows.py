"""Rows: a test's outcome as tidy table rows. Pure (no network, no files).

One summary row per test (summary.csv) and one row per established MPTCP subflow (subflows.csv).
The summary row joins what iperf3 measured (goodput at the receiver), what the kernel counted (MIB
deltas of the client's namespace), what the sampler saw (subflows per connection, from ``ss``),
the link parameters of the point, and -- with a controller -- the bytes each path carried.
"""

from __future__ import annotations

from typing import Any

from .measurements import connection_token, subflows_of, tcp_connection_is_plain
from .plan import Plan, PlanTest

#: Link parameters reported in the summary (the link's own, before per-direction overrides).
LINK_COLUMNS = {"bw": "bw_mbps", "delay": "delay_ms", "jitter": "jitter_ms", "loss": "loss_pct",
                "queue": "queue_pkts"}


def summarize_iperf3(client_json: dict[str, Any]) -> dict[str, Any]:
    """Goodput (what the receiver got), the sender's retransmits, the data connections' ports."""
    end = client_json.get("end", {})
    rec = end.get("sum_received", {})
    sent = end.get("sum_sent", {})
    start = client_json.get("start", {})
    conns = [f"{c['local_host']}:{c['local_port']}" for c in start.get("connected", [])]
    return {
        "goodput_mbps": rec.get("bits_per_second", 0.0) / 1e6,
        "bytes": rec.get("bytes", 0),
        "duration_s": rec.get("seconds", sent.get("seconds", 0.0)),
        "iperf3_retransmits": sent.get("retransmits"),
        "connections": conns,
        "sender_cc": end.get("sender_tcp_congestion"),
    }


#: The client's MPTcpExt counters that mean "this connection went on as plain TCP" (their sum is
#: the summary's mptcp_fallback): no MP_CAPABLE in the SYN/ACK or third ACK, no MPTCP option where
#: the first DSS was due (a stripped option), a DSS the peer could not use, a SYN with MP_CAPABLE
#: unanswered and sent again without it (and the blackhole state that follows), an infinite
#: mapping after MP_FAIL on the only subflow.
FALLBACK_COUNTERS = ("MPTcpExtMPCapableFallbackACK", "MPTcpExtMPCapableFallbackSYNACK",
                     "MPTcpExtMPCapableDataFallback", "MPTcpExtDssFallback", "MPTcpExtMPCapableSYNTXDrop",
                     "MPTcpExtBlackhole", "MPTcpExtInfiniteMapTx", "MPTcpExtInfiniteMapRx")

#: Summary columns of a test run with the transfer tool (traffic.tool: transfer).
TRANSFER_COLUMNS = ("bytes_sent", "bytes_received", "data_intact", "first_diff_offset", "diff_run_bytes")


def data_columns(client_json: dict[str, Any] | None, server_json: dict[str, Any] | None = None) -> dict[str, Any]:
    """Whether the receiver got exactly what was sent: the transfer tool's byte counts and both
    ends' SHA-256, each from its own end's report (read out of band, from the processes'
    output: the receiver's answer on the connection crosses the network under test, and a
    middlebox or a reset may change or lose it). A transfer that never reported (no JSON,
    connection refused) delivered nothing intact. Where the data differs (the receiver compares
    what it reads with the seeded stream): the offset of the first differing byte and the length
    of the differing run from there -- empty when nothing read differs (intact, or only short)."""
    sent = (client_json or {}).get("transfer") or {}
    got = (server_json or {}).get("transfer") or {}
    if "sha256" in got:
        received, digest = got.get("bytes"), got.get("sha256")
    else:  # no receiver's report: what it answered on the connection, if anything
        received, digest = sent.get("bytes_received"), sent.get("sha256_received")
    intact = (sent.get("sha256_sent") is not None and digest == sent.get("sha256_sent")
              and received == sent.get("bytes_sent"))
    return {"bytes_sent": sent.get("bytes_sent"), "bytes_received": received, "data_intact": bool(intact),
            "first_diff_offset": got.get("first_diff_offset"), "diff_run_bytes": got.get("diff_run_bytes")}


def varying_link_params(plans: list[Plan]) -> set[str]:
    """Link parameters that differ between links in any of these plans (one column per link)."""
    return {key for plan in plans for key in LINK_COLUMNS
            if len({getattr(link.base, key) for link in plan.links}) > 1}


def link_columns(plan: Plan, per_link: set[str]) -> dict[str, Any]:
    """Link parameters as summary columns: one column when every link agrees (in every point of
    the run), else one per link, named `links[i].<param>` like the sweep's field paths."""
    cols: dict[str, Any] = {}
    for key, col in LINK_COLUMNS.items():
        if key in per_link:
            for link in plan.links:
                cols[f"links[{link.index}].{col}"] = getattr(link.base, key)
        else:
            cols[col] = getattr(plan.links[0].base, key) if plan.links else None
    return cols


def _subflow_rows(experiment: str, test: PlanTest, connections: list[str], samples: list[dict[str, Any]]
                  ) -> tuple[list[int], list[dict[str, Any]]]:
    """Established subflows per MPTCP connection, and one row for each."""
    counts, rows = [], []
    for conn in connections:
        token = connection_token(samples, conn)
        established = [x for x in (subflows_of(samples, token) if token else []) if x["established"] and x["lasting"]]
        counts.append(len(established))
        total = sum(x.get("bytes_acked", 0) for x in established) or 1
        for x in established:
            rows.append({
                "experiment": experiment, "test": test.label, "repetition": test.repetition,
                "connection": conn, "token": token, "local": x["local"], "remote": x["remote"],
                "local_id": x.get("local_id"), "bytes_acked": x.get("bytes_acked", 0),
                "share": x.get("bytes_acked", 0) / total, "mean_rtt_ms": x["mean_rtt_ms"],
                "retrans_total": x.get("retrans_total", 0), "cc": x.get("cc"),
            })
    return counts, rows


def rows_for_test(experiment: str, plan: Plan, test: PlanTest, outcome: Any, counters: dict[str, dict[str, int]],
              per_link: set[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One summary row and the per-subflow rows of one test."""
    row: dict[str, Any] = {
        "experiment": experiment, "test": test.label, "variant": test.variant or test.protocol,
        "protocol": test.protocol, "repetition": test.repetition,
        "expected_subflows": test.expected_subflows, "error": outcome.error,
    }
    sub_rows: list[dict[str, Any]] = []
    if outcome.client_json and not outcome.error:
        s = summarize_iperf3(outcome.client_json)
        row.update(goodput_mbps=s["goodput_mbps"], duration_s=s["duration_s"], bytes=s["bytes"],
                   iperf3_retransmits=s["iperf3_retransmits"], sender_cc=s["sender_cc"])
        client = counters.get("client", {})
        row["retransmits"] = client.get("TcpRetransSegs", 0)
        if test.protocol == "mptcp":
            counts, sub_rows = _subflow_rows(experiment, test, s["connections"], outcome.samples)
            row["subflows"] = min(counts) if counts else 0
            row["mp_joins"] = client.get("MPTcpExtMPJoinSynAckRx", 0)
            row["mptcp_fallback"] = sum(client.get(c, 0) for c in FALLBACK_COUNTERS)
        else:
            plain = [tcp_connection_is_plain(outcome.samples, c) for c in s["connections"]]
            row["subflows"] = 1 if all(p is not False for p in plain) else 0
    else:
        row.update(goodput_mbps=None, subflows=0)
    if plan.tool == "transfer":
        row.update(data_columns(outcome.client_json, outcome.server_json))
    row["subflows_ok"] = bool(row.get("subflows", 0) >= row["expected_subflows"]) and not outcome.error
    row.update(link_columns(plan, per_link))
    row["started"] = outcome.started
    row["ended"] = outcome.ended
    return row, sub_rows


def path_columns(paths: list[list[str]], before: dict[str, dict[int, int]], after: dict[str, dict[int, int]],
                 n_subflows: int, cookie_base: int) -> dict[str, int]:
    """Bytes client -> server per path of the controller's set, read at each path's first switch
    (subflow i takes path i mod len(paths) and its rule carries cookie_base + i)."""
    cols = {f"path{j + 1}_bytes": 0 for j in range(len(paths))}
    for i in range(n_subflows):
        j = i % len(paths)
        first = paths[j][1]
        cookie = cookie_base + i
        cols[f"path{j + 1}_bytes"] += after.get(first, {}).get(cookie, 0) - before.get(first, {}).get(cookie, 0)
    return cols


def at_point(point_id: str, values: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of a sweep point lead with the point's id and swept values."""
    return [{"point": point_id, **values, **r} for r in rows]


def why_flagged(row: dict[str, Any]) -> str | None:
    """Why a test's row cannot be trusted as it stands (None: it can)."""
    if row["subflows_ok"]:
        return None
    return row["error"] or f"{row['subflows']} subflow(s), expected {row['expected_subflows']}"


#: Summary columns every test has (the link, path and sweep columns come on top).
TEST_COLUMNS = ("experiment", "test", "variant", "protocol", "repetition", "expected_subflows", "error",
                "goodput_mbps", "duration_s", "bytes", "iperf3_retransmits", "sender_cc", "retransmits",
                "subflows", "mp_joins", "mptcp_fallback", "subflows_ok", "started", "ended", "maxflow_mbps",
                "goodput_over_maxflow")


def summary_columns(plans: list[Plan], swept: list[str], n_paths: int = 0) -> list[str]:
    """Every column summary.csv will have for a run of these plans (one per sweep point)."""
    per_link = varying_link_params(plans)
    link_cols = list(link_columns(plans[0], per_link)) if plans else []
    point_cols = ["point", *swept] if swept else []
    multi = MULTI_FLOW_COLUMNS if any(p.multi_flow for p in plans) else ()
    cut = EVENT_COLUMNS if any(p.events for p in plans) else ()
    data = TRANSFER_COLUMNS if any(p.tool == "transfer" for p in plans) else ()
    return [*point_cols, *TEST_COLUMNS, *data, *multi, *cut, *link_cols, *(f"path{j + 1}_bytes" for j in range(n_paths))]


#: Columns a custom figure may use beside summary.csv's: the host that ran each point (from
#: metadata.json; a local run's points all ran on the host it started on).
FIGURE_COLUMNS = ("host",)


def figure_problems(figures: list[Any], columns: list[str]) -> list[str]:
    """A custom figure naming a column the run will not produce is found before the run, not
    after it."""
    problems = []
    for i, fig in enumerate(figures):
        for key in ("x", "y", "hue", "col"):
            name = getattr(fig, key)
            if name is not None and name not in columns and name not in FIGURE_COLUMNS:
                problems.append(f"figures[{i}].{key}: {name!r} is not a column of summary.csv "
                                f"(columns: {', '.join(columns)})")
    return problems


# --------------------------------------------------------------------------- several flows per test


def _receiver_goodput(o: Any) -> tuple[float | None, int | None, float | None]:
    """(Mbit/s, bytes, seconds) the receiver got: the server's own report, else the client's
    copy of it."""
    for js in (o.server_json, o.client_json):
        rec = (js or {}).get("end", {}).get("sum_received")
        if rec and rec.get("seconds"):
            return rec["bits_per_second"] / 1e6, rec.get("bytes"), rec["seconds"]
    return None, None, None


def mib_by_test(mib: Any) -> dict[str, dict[str, int]]:
    """mptcp-mib.csv (a DataFrame, or None) as test -> {counter: delta summed over the test's hosts}."""
    if mib is None or mib.empty or not {"test", "counter", "delta"} <= set(mib):
        return {}
    out: dict[str, dict[str, int]] = {}
    for (test, counter), delta in mib.groupby(["test", "counter"])["delta"].sum().items():
        out.setdefault(str(test), {})[str(counter)] = int(delta)
    return out


def mib_rows(counters: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """One row per host (or role) and MPTcpExt* counter that moved during a test: what the
    kernel's MPTCP did (joins, fallbacks, ADD_ADDRs, reinjections, ...), long form."""
    return [{"host": host, "counter": name, "delta": value}
            for host, deltas in sorted(counters.items()) for name, value in sorted(deltas.items())
            if name.startswith("MPTcpExt")]


def receiver_series(server_json: dict[str, Any] | None, launched_s: float) -> list[tuple[float, float]]:
    """(t, Mbit/s) of the receiver's intervals on the test's clock: the launch plus the end of
    each interval as iperf3's server counts it (set-up not included, see goodput_series)."""
    out = []
    for iv in (server_json or {}).get("intervals", []):
        s = iv.get("sum", {})
        if "end" in s:
            out.append((round(launched_s + s["end"], 3), s.get("bits_per_second", 0.0) / 1e6))
    return out


def goodput_series(o: Any) -> list[dict[str, Any]]:
    """The receiver's goodput every 0.1 s, on the test's clock: the flow's launch plus the end of
    the interval as iperf3's server counts it. iperf3 counts from its test start, after its
    control connection, parameter exchange and data connections (about 3 RTTs; iperf3 3.12
    reports no time for them), so each point is that much earlier than the wall clock's."""
    if o.launched_s is None:
        return []
    return [{"flow": o.flow.label, "t": t, "goodput_mbps": g} for t, g in receiver_series(o.server_json, o.launched_s)]


def completion_s(o: Any) -> float | None:
    """A byte-count flow's completion time: from its sender's connect() to its receiver's
    reading the last byte, as the transfer tool that sends it measures on the clock both ends
    share (mptcplab.transfer). None for duration flows, and for a flow that failed or did not
    deliver every byte."""
    if o.flow.bytes is None or o.error:
        return None
    t = (o.client_json or {}).get("transfer", {})
    whole = t.get("bytes_received") == t.get("bytes_sent") == o.flow.bytes
    return round(t["completion_s"], 4) if whole and t.get("completion_s") is not None else None


def flow_rows(experiment: str, test: PlanTest, outcome: Any, optimum: Any | None,
              bottlenecks: list[str] | None = None
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(flows.csv rows, subflows.csv rows, goodput time-series rows) of one multi-flow test;
    ``optimum`` (mptcplab.optimum.Optimum) gives each flow's share at the optimum, when known;
    ``bottlenecks`` each flow's bottleneck link, when known (routes.flow_bottlenecks)."""
    rows, subs, series = [], [], []
    for k, o in enumerate(outcome.flows):
        f = o.flow
        goodput, nbytes, seconds = _receiver_goodput(o) if not o.error else (None, None, None)
        row: dict[str, Any] = {
            "experiment": experiment, "test": test.label, "variant": test.variant or test.protocol,
            "repetition": test.repetition, "flow": f.label, "src": f.src, "dst": f.dst, "protocol": f.protocol,
            "cc": (o.client_json or {}).get("end", {}).get("sender_tcp_congestion") or f.congestion_control,
            "parallel": f.parallel, "extra_subflows": f.extra_subflows, "expected_subflows": f.expected_subflows,
            "scheduled_start_s": f.start_s,
            "launch_offset_ms": None if o.launch_offset_ms is None else round(o.launch_offset_ms, 3),
            "goodput_mbps": goodput, "bytes": nbytes, "duration_s": seconds, "fct_s": completion_s(o),
            "data_intact": data_columns(o.client_json, o.server_json)["data_intact"] if f.bytes is not None else None,
            "iperf3_retransmits": (o.client_json or {}).get("end", {}).get("sum_sent", {}).get("retransmits"),
            "optimum_mbps": optimum.per_flow_mbps[k] if optimum else None,
            "bottleneck": bottlenecks[k] if bottlenecks else None, "error": o.error,
        }
        conns = summarize_iperf3(o.client_json)["connections"] if o.client_json and not o.error else []
        samples = outcome.samples.get(f.src, [])
        if f.protocol == "mptcp":
            counts, sub = _subflow_rows(experiment, test, conns, samples)
            subs += [{**x, "flow": f.label} for x in sub]
            row["subflows"] = min(counts) if counts else 0
        else:
            row["subflows"] = 1 if conns else 0
        rows.append(row)
        series += [{"experiment": experiment, "test": test.label, "variant": row["variant"], **x}
                   for x in goodput_series(o)]
    total = sum(r["goodput_mbps"] or 0.0 for r in rows)
    for r in rows:
        r["share"] = (r["goodput_mbps"] or 0.0) / total if total else None
        opt = r["optimum_mbps"]
        r["fraction_of_optimum"] = r["goodput_mbps"] / opt if r["goodput_mbps"] is not None and opt else None
    return rows, subs, series


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _jain_per_bottleneck(flows: list[dict[str, Any]]) -> float | None:
    """Jain's index among the flows that share a bottleneck link, averaged over the bottlenecks
    shared by two flows or more (None when no bottleneck is known or shared)."""
    from .optimum import jain

    groups: dict[str, list[float | None]] = {}
    for r in flows:
        if r.get("bottleneck"):
            groups.setdefault(r["bottleneck"], []).append(r["goodput_mbps"])
    values = [jain(g) for g in groups.values() if len(g) > 1]
    return None if not values or None in values else sum(values) / len(values)  # type: ignore[arg-type]


def multi_flow_summary(experiment: str, plan: Plan, test: PlanTest, outcome: Any, flows: list[dict[str, Any]],
                       per_link: set[str], optimum: Any | None, counters: dict[str, dict[str, int]]) -> dict[str, Any]:
    """The summary.csv row of a multi-flow test: the aggregate, fairness against each other and
    against the optimum, and the schedule. ``retransmits`` is the kernel's count (TcpRetransSegs)
    summed over the flows' source hosts, as in a one-flow row; ``counters`` per host."""
    from .optimum import fraction_of_optimal, jain, normalized_jain

    goodputs = [r["goodput_mbps"] for r in flows]
    complete = None not in goodputs
    mptcp = [r["goodput_mbps"] for r in flows if r["protocol"] == "mptcp" and r["goodput_mbps"] is not None]
    tcp = [r["goodput_mbps"] for r in flows if r["protocol"] == "tcp" and r["goodput_mbps"] is not None]
    offsets = [abs(r["launch_offset_ms"]) for r in flows if r["launch_offset_ms"] is not None]
    sources = sorted({r["src"] for r in flows})
    row: dict[str, Any] = {
        "experiment": experiment, "test": test.label, "variant": test.variant or test.protocol,
        "protocol": test.protocol, "repetition": test.repetition, "expected_subflows": test.expected_subflows,
        "error": outcome.error, "flows": len(flows),
        "goodput_mbps": sum(goodputs) if complete else None,
        "bytes": sum(r["bytes"] or 0 for r in flows),
        "duration_s": max((r["duration_s"] or 0.0 for r in flows), default=None),
        "retransmits": sum(counters.get(h, {}).get("TcpRetransSegs", 0) for h in sources),
        # iperf3's own count, only when every flow has one (byte-count flows are not iperf3's)
        "iperf3_retransmits": (None if any(r["iperf3_retransmits"] is None for r in flows)
                               else sum(r["iperf3_retransmits"] for r in flows)),
        "jain": jain(goodputs) if len(flows) > 1 else None,
        "jain_bottleneck": _jain_per_bottleneck(flows),
        "jain_of_optimum": normalized_jain(goodputs, optimum) if optimum and len(flows) > 1 else None,
        "optimum_mbps": optimum.total_mbps if optimum else None,
        "fraction_of_optimal": fraction_of_optimal(goodputs, optimum) if optimum else None,
        "mptcp_tcp_ratio": _mean(mptcp) / _mean(tcp) if mptcp and tcp and sum(tcp) else None,
        "max_launch_offset_ms": max(offsets) if offsets else None,
    }
    # subflows / expected_subflows: those of the MPTCP flow furthest short of its target
    candidates = [r for r in flows if r["protocol"] == "mptcp"] or flows
    worst = min(candidates, key=lambda r: (r["subflows"] / r["expected_subflows"], r["subflows"]))
    row["subflows"], row["expected_subflows"] = worst["subflows"], worst["expected_subflows"]
    row["subflows_ok"] = not outcome.error and all(
        r["subflows"] >= r["expected_subflows"] and r["goodput_mbps"] is not None for r in flows)
    row.update(link_columns(plan, per_link))
    row["started"], row["ended"] = outcome.started, outcome.ended
    return row


#: Summary columns of a one-flow test with events: the first cut and how the flow rode it out.
EVENT_COLUMNS = ("event_s", "event_link", "before_mbps", "outage_s", "recovery_s", "recovery_remaining_s",
                 "delivered_mb", "survived", "fate", "cuts", "outage_mean_s", "outage_max_s")

#: Summary columns of a multi-flow test beyond TEST_COLUMNS.
MULTI_FLOW_COLUMNS = ("flows", "jain", "jain_bottleneck", "jain_of_optimum", "optimum_mbps", "fraction_of_optimal",
                      "ecmp_model_fraction", "mptcp_tcp_ratio", "max_launch_offset_ms")
