"""The experiment spec: pydantic models and YAML loading.

This stage knows nothing of Mininet, subprocesses or files other than the spec and the topology
it names. Every problem is reported as one line naming the field path and what is allowed, so a
researcher can fix the YAML without reading a traceback.

Names of hosts and switches become Linux interface names (``h1-eth0``, at most 15 characters) and
Open vSwitch bridge names, so they are checked here against what Linux and Mininet accept; they
never reach a shell anyway (every command is an argument list).
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from .errors import SpecError
from .ids import IFNAME_MAX, NODE_NAME, host_of
from .linkmodel import parse_ms

__all__ = ["SpecError", "Experiment", "load_spec", "parse_spec", "resolve_spec_path", "json_schema"]

#: Linux limits interface names to 15 characters (IFNAMSIZ - 1); Mininet names them NODE-ethK.
NAME_RE = NODE_NAME


# --------------------------------------------------------------------------- value types

def _duration_ms(value: Any) -> Any:
    """Accept ``10``, ``10.5``, ``"10ms"``, ``"500us"`` or ``"1s"``; milliseconds as float."""
    return parse_ms(value) if isinstance(value, str) else value


def _between(lo: float, hi: float, what: str = ""):
    def check(v: float) -> float:
        if not lo <= v <= hi:
            raise ValueError(f"{v:g} is not between {lo:g} and {hi:g}{what}")
        return v

    return check


Milliseconds = Annotated[float, BeforeValidator(_duration_ms), AfterValidator(_between(0, 60_000, " ms"))]
LossPercent = Annotated[float, AfterValidator(_between(0, 100, " (percent)"))]
Mbps = Annotated[float, AfterValidator(_between(0.001, 100_000, " Mbit/s"))]
Packets = Annotated[int, AfterValidator(_between(1, 1_000_000, " packets"))]


#: Put by Experiment in place of traffic.client/server when a spec has neither them nor flows, so
#: that the field reports itself missing alongside any other problem of the spec.
MISSING_HOST = "\x00missing"


def _check_name(v: str) -> str:
    if v == MISSING_HOST:
        raise ValueError("required field is missing (or give flows: / matrix:)")
    if not isinstance(v, str) or not NAME_RE.fullmatch(v):
        raise ValueError(
            f"{v!r} is not a valid node name: use a letter then letters, digits or '_' "
            "(at most 10 characters, so that interface names like NAME-eth0 fit Linux's 15)"
        )
    return v


NodeName = Annotated[str, AfterValidator(_check_name)]


class _Model(BaseModel):
    # inf and nan are refused everywhere: no link, duration or tolerance is infinite.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- topology


class BurstLoss(_Model):
    """Gilbert-Elliott burst loss (netem's `loss gemodel`), all in percent per frame."""

    p: LossPercent = Field(description="chance to move from the good to the bad state")
    r: LossPercent = Field(100.0, description="chance to move from the bad back to the good state")
    loss_bad: LossPercent = Field(100.0, description="loss rate while in the bad state")
    loss_good: LossPercent = Field(0.0, description="loss rate while in the good state")


def _public_nat(a: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
    if a.is_unspecified or a.is_multicast or a.is_loopback or a == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{a} cannot be a host's address (unspecified, multicast, loopback or broadcast)")
    return a


class Middlebox(_Model):
    """A box in the path that rewrites TCP segments passing in this direction (the user-space
    link emulator does it, on every kernel): what MPTCP meets in the wild."""

    strip_mptcp: Literal["none", "all", "syn", "join", "add-addr"] = Field(
        "none", description="MPTCP options overwritten with NOPs: in every segment (all), in SYNs only (syn), "
        "MP_JOIN only (join), ADD_ADDR only (add-addr)")
    drop_mptcp_syn: bool = Field(False, description="drop SYNs that carry an MPTCP option (a strict firewall)")
    clamp_mss: Annotated[int, AfterValidator(_between(88, 65535, " bytes"))] | None = Field(
        None, description="lower the MSS option of SYNs to this many bytes")
    rewrite_payload_every: Annotated[int, AfterValidator(_between(1, 1_000_000_000, " segments"))] | None = Field(
        None, description="change one payload byte of every N-th data segment (the middle one, XOR 0xff) and "
        "fix the TCP checksum, as a rewriting box (an ALG, a 'transparent' proxy) does: TCP does not notice, "
        "only MPTCP's DSS checksum can -- with checksums on, MP_FAIL and fallback to TCP (RFC 8684 "
        "section 3.7); without, the application gets corrupt data")
    rewrite_after: Annotated[int, AfterValidator(_between(0, 1_000_000_000_000, " segments"))] = Field(
        0, description="rewrite only after this many data segments of the direction (let the MPTCP "
        "handshake and the first data through): the (after+N)-th, (after+2N)-th, ... are rewritten")
    rewrite_max: Annotated[int, AfterValidator(_between(1, 1_000_000_000, " segments"))] | None = Field(
        None, description="rewrite at most this many segments of each connection, then let its data pass: "
        "the counts (for rewrite_after too) start at each connection's SYN passing in this direction. A box "
        "that corrupts one segment of a connection and no more shows what the fallback to TCP after MP_FAIL "
        "(RFC 8684 section 3.7) delivers: nothing protects the data after it, so a box that goes on rewriting "
        "would corrupt it whatever MPTCP did")
    split_at: Annotated[int, AfterValidator(_between(1, 65000, " bytes"))] | None = Field(
        None, description="split every data segment with more payload than this in two (this many bytes, "
        "then the rest; same TCP options in both), as segmentation offload and some proxies do: both "
        "halves carry the same DSS option, whose mapping covers them both, so MPTCP must reassemble "
        "data whose mapping spans segments")
    randomize_isn: bool = Field(
        False, description="randomise initial sequence numbers, as many firewalls do: every TCP connection whose "
        "SYN passes in this direction gets a random offset (drawn from the run's seed) added to its sequence "
        "numbers here and taken off the acknowledgments and SACK blocks coming back. MPTCP must not notice: "
        "a DSS mapping's subflow sequence number is relative to the subflow's ISN (RFC 8684 section 3.3)")
    nat: Annotated[ipaddress.IPv4Address, AfterValidator(_public_nat)] | None = Field(
        None, description="source NAT to this IPv4 address: IPv4 TCP connections whose SYN passes in this "
        "direction leave from it and from a port the box allocates (20000 up), replies are translated back, "
        "segments matching no connection dropped, and ARP for the address answered with the MAC address of "
        "the host behind. MPTCP options are left alone, as real NATs leave them: ADD_ADDR and MP_JOIN then "
        "name private addresses (segments to other addresses than this one pass untranslated: whether the private "
        "address is reachable is the topology's business)")
    coalesce_up_to: Annotated[int, AfterValidator(_between(2, 1400, " bytes"))] | None = Field(
        None, description="coalesce segments, as receive offload and some proxies do: a data segment shorter than "
        "this is held briefly, and the next segments of its connection, if contiguous, are merged into it while "
        "the payload fits. The merged segment keeps the first one's TCP options, so the second one's DSS mapping "
        "is lost and the merged data is not fully covered by a mapping (RFC 8684 sections 3.3.5 and 3.7). At "
        "most 1400 so that a merged frame fits the links' 1500-byte MTU with any headers (IPv6, 60 bytes of TCP "
        "header): bulk transfers' full-size segments are not merged -- clamp the MSS to make them small")
    coalesce_hold: Annotated[float, BeforeValidator(_duration_ms),
                             AfterValidator(_between(0.001, 1000, " ms"))] = Field(
        1.0, description="how long a segment is held at most waiting for the next one (ms or e.g. '500us'); with "
        "coalesce_up_to only")

    @model_validator(mode="after")
    def _together(self) -> "Middlebox":
        # compared with the default, not model_fields_set: sweeps re-validate a dumped spec, every field set
        if self.coalesce_hold != type(self).model_fields["coalesce_hold"].default and self.coalesce_up_to is None:
            raise ValueError("coalesce_hold: holds segments for coalescing: give coalesce_up_to too, or remove it")
        return self


#: Middleboxes by name, for sweeps and short specs (`middlebox: strip-syn`): what each kind of box
#: found in the wild does, with settings that show it within a few seconds of a test. A mapping of
#: Middlebox fields says the same at length.
MIDDLEBOX_PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "strip-all": {"strip_mptcp": "all"},
    "strip-syn": {"strip_mptcp": "syn"},
    "strip-join": {"strip_mptcp": "join"},
    "strip-add-addr": {"strip_mptcp": "add-addr"},
    "drop-mptcp-syn": {"drop_mptcp_syn": True},
    "clamp-mss": {"clamp_mss": 1000},
    "rewrite-payload": {"rewrite_payload_every": 50, "rewrite_after": 20},
    "rewrite-once": {"rewrite_payload_every": 1, "rewrite_after": 100, "rewrite_max": 1},
    "split": {"split_at": 500},
    "randomize-isn": {"randomize_isn": True},
    "coalesce": {"coalesce_up_to": 1400},
    "nat": {},
}
#: `NAME=VALUE` sets this field of the preset (`clamp-mss=600`, `nat=10.0.1.100`); nat needs one.
PRESET_ARGUMENT = {"clamp-mss": "clamp_mss", "rewrite-payload": "rewrite_payload_every", "split": "split_at",
                   "coalesce": "coalesce_up_to", "nat": "nat"}


def _middlebox_preset(v: Any) -> Any:
    """`middlebox: strip-syn` (or `clamp-mss=600`) is short for the preset's fields."""
    if not isinstance(v, str):
        return v
    name, eq, arg = v.partition("=")
    if name not in MIDDLEBOX_PRESETS:
        raise ValueError(f"{v!r} is not a middlebox preset ({', '.join(MIDDLEBOX_PRESETS)}); or give the "
                         "fields, e.g. {strip_mptcp: syn}")
    fields = dict(MIDDLEBOX_PRESETS[name])
    if eq:
        if name not in PRESET_ARGUMENT or not arg:
            takes = ", ".join(f"{k}=N" if k != "nat" else "nat=ADDRESS" for k in PRESET_ARGUMENT)
            raise ValueError(f"{v!r}: only these presets take a value: {takes}")
        fields[PRESET_ARGUMENT[name]] = arg  # validated as the field it sets
    elif name == "nat":
        raise ValueError("'nat' needs the public address: nat=ADDRESS (e.g. nat=10.0.1.100, on the far side's subnet)")
    return fields


MiddleboxField = Annotated[Middlebox | None, BeforeValidator(_middlebox_preset)]


class DirectionParams(_Model):
    """One direction of a link; anything left out comes from the link's own parameters."""

    bw: Mbps | None = None
    delay: Milliseconds | None = None
    jitter: Milliseconds | None = None
    loss: LossPercent | None = None
    queue: Packets | None = None
    queue_bytes: Annotated[int, AfterValidator(_between(1500, 1_000_000_000, " bytes"))] | None = None
    burst_loss: BurstLoss | None = None
    reorder: bool | None = None
    middlebox: MiddleboxField = None


class LinkParams(_Model):
    """Emulated link parameters; each applies to both directions, as in Mininet's TCLink."""

    bw: Mbps | None = Field(None, description="rate in Mbit/s; none = unshaped")
    delay: Milliseconds = Field(0.0, description="one-way delay in ms")
    jitter: Milliseconds = Field(0.0, description="delay variation in ms (uniform, +-jitter)")
    loss: LossPercent = Field(0.0, description="random loss in percent")
    queue: Packets | None = Field(None, description="drop-tail queue limit in packets")
    queue_bytes: Annotated[int, AfterValidator(_between(1500, 1_000_000_000, " bytes"))] | None = Field(
        None, description="drop-tail queue limit in bytes (user-space shaper)")
    burst_loss: BurstLoss | None = Field(None, description="Gilbert-Elliott burst loss instead of random loss")
    reorder: bool = Field(False, description="let jitter reorder frames (kept in order otherwise)")
    middlebox: MiddleboxField = Field(None, description="a middlebox on both directions (up/down: one); a "
                                      "preset's name (strip-syn, rewrite-payload, ...: MIDDLEBOX_PRESETS) or its fields")


class Link(LinkParams):
    endpoints: tuple[NodeName, NodeName] = Field(description="the two node names")
    up: DirectionParams | None = Field(None, description="overrides from endpoints[0] to endpoints[1]")
    down: DirectionParams | None = Field(None, description="overrides from endpoints[1] to endpoints[0]")

    @property
    def name(self) -> str:
        return f"{self.endpoints[0]}-{self.endpoints[1]}"

    @model_validator(mode="after")
    def _nat_one_way(self) -> "Link":
        if self.middlebox is not None and self.middlebox.nat is not None:
            raise ValueError("middlebox.nat: a NAT translates the connections opened in one direction: put it "
                             "under up: (from endpoints[0]) or down:")
        return self


class HostSpec(_Model):
    interfaces: int | None = Field(None, ge=1, le=16, description="number of interfaces")
    addresses: list[str] | None = Field(
        None, description="explicit addresses, one per interface, CIDR (10.0.1.1/24)"
    )

    @field_validator("addresses")
    @classmethod
    def _cidr(cls, v: list[str] | None) -> list[str] | None:
        for a in v or []:
            try:
                iface = ipaddress.ip_interface(a)
            except ValueError:
                raise ValueError(f"{a!r} is not an address with prefix, e.g. 10.0.1.1/24") from None
            if iface.version != 4:
                raise ValueError(f"{a!r}: only IPv4 addressing is supported for now")
        return v


class Generate(_Model):
    """A generated topology (mptcplab.topogen): a FatTree(k) or a dumbbell of n host pairs, with
    link parameters per layer -- fattree: edge, aggregation, core; dumbbell: access, bottleneck."""

    kind: Literal["fattree", "dumbbell"]
    k: int = Field(4, description="fattree: pods (even; k^3/4 hosts, 5k^2/4 switches)")
    pairs: int = Field(1, ge=1, le=64, description="dumbbell: sender/receiver host pairs")
    links: dict[str, LinkParams] = Field(default_factory=dict, description="link parameters per layer")

    @model_validator(mode="after")
    def _shape(self) -> "Generate":
        from .topogen import LAYERS

        if self.kind == "fattree" and self.k not in (2, 4, 6, 8):
            raise ValueError(f"k: {self.k}: a FatTree needs an even k from 2 to 8 (k=8: 128 hosts, the most "
                             "one /24 of automatic addresses holds)")
        unknown = sorted(set(self.links) - set(LAYERS[self.kind]))
        if unknown:
            raise ValueError(f"links: {', '.join(unknown)}: not a layer of a {self.kind} "
                             f"({', '.join(LAYERS[self.kind])})")
        return self


class Topology(_Model):
    hosts: dict[NodeName, HostSpec]
    switches: list[NodeName] = Field(default_factory=list)
    routers: list[NodeName] = Field(
        default_factory=list, description="IP routers (Linux forwarding in a namespace of their own): each of "
        "their links is a layer-2 segment of its own (or joins a switch's), so a router joins segments")
    links: list[Link]
    subnet_base: str = Field(
        "10.0.0.0/16", description="automatic addressing: one /24 per L2 segment from this /16"
    )
    generated_from: Generate | None = Field(
        None, description="set when the topology was written as `generate:` (recorded with the expansion)")

    @model_validator(mode="before")
    @classmethod
    def _generate(cls, v: Any) -> Any:
        """`generate: {kind: fattree, k: 4, ...}` instead of hosts/switches/links."""
        if not isinstance(v, dict) or "generate" not in v:
            return v
        from .topogen import generate

        if {"hosts", "switches", "links"} & set(v):
            raise ValueError("generate: give either generate or hosts/switches/links, not both")
        try:
            gen = Generate.model_validate(v["generate"])
        except ValidationError as err:
            raise ValueError("\n".join(_messages(err, "generate"))) from None
        layers = {name: p.model_dump(exclude_defaults=True) for name, p in gen.links.items()}
        rest = {key: value for key, value in v.items() if key != "generate"}
        return {**rest, **generate(gen.kind, k=gen.k, pairs=gen.pairs, links=layers),
                "generated_from": gen.model_dump(mode="json")}

    @field_validator("hosts", mode="before")
    @classmethod
    def _hosts_shorthand(cls, v: Any) -> Any:
        # `h1: 2` is short for `h1: {interfaces: 2}`; `h1:` alone means one interface.
        if isinstance(v, dict):
            return {
                k: ({"interfaces": x} if isinstance(x, int) else ({} if x is None else x))
                for k, x in v.items()
            }
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Topology":
        problems: list[str] = []
        names = list(self.hosts) + list(self.switches) + list(self.routers)
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            problems.append(f"names used twice: {', '.join(sorted(dup))}")
        for r in sorted(set(self.routers) & dup):
            kinds = [k for k, group in (("host", self.hosts), ("switch", self.switches)) if r in group]
            if kinds or self.routers.count(r) > 1:
                problems.append(f"routers: {r!r} is also {' and '.join('a ' + k for k in kinds) or 'listed twice'}; "
                                "give each node its own name")
        known = set(names)
        degree: dict[str, int] = {n: 0 for n in names}
        for i, link in enumerate(self.links):
            a, b = link.endpoints
            for n in (a, b):
                if n not in known:
                    problems.append(
                        f"links[{i}].endpoints: {n!r} is neither a host nor a switch"
                        f"{' nor a router' if self.routers else ''} "
                        f"(known: {', '.join(sorted(known))})"
                    )
                else:
                    degree[n] += 1
            if a == b:
                problems.append(f"links[{i}].endpoints: a link needs two different nodes")
        for h, spec in self.hosts.items():
            n_links = degree.get(h, 0)
            want = spec.interfaces or (len(spec.addresses) if spec.addresses else n_links)
            if spec.addresses and spec.interfaces and len(spec.addresses) != spec.interfaces:
                problems.append(f"hosts.{h}: {spec.interfaces} interfaces but {len(spec.addresses)} addresses")
            if n_links != want:
                problems.append(
                    f"hosts.{h}: declares {want} interface(s) but {n_links} link(s) end at it"
                )
        for r in dict.fromkeys(self.routers):
            if degree.get(r, 0) < 2:
                problems.append(f"routers: {r} has {degree.get(r, 0)} link(s); a router joins segments and "
                                "needs at least 2")
        for n, d in degree.items():
            if len(f"{n}-eth{max(d - 1, 0)}") > IFNAME_MAX:
                problems.append(
                    f"{n}: interface name {n}-eth{d - 1} is longer than {IFNAME_MAX} characters; "
                    "use a shorter node name"
                )
        try:
            net = ipaddress.ip_network(self.subnet_base)
            if net.prefixlen > 16 or net.version != 4:
                raise ValueError
        except ValueError:
            problems.append(f"subnet_base: {self.subnet_base!r} must be an IPv4 network of /16 or wider")
        if problems:
            raise ValueError("\n".join(problems))
        return self


# --------------------------------------------------------------------------- MPTCP

#: laminar (Linux 6.18+): subflows to each address the peer announces, from this endpoint's address.
EndpointFlag = Literal["signal", "subflow", "backup", "fullmesh", "laminar"]


class Limits(_Model):
    subflows: int = Field(8, ge=0, le=8, description="extra subflows per connection (kernel max 8)")
    add_addr_accepted: int = Field(8, ge=0, le=8, description="ADD_ADDRs accepted per connection")


class MptcpHost(_Model):
    """Settings for one host; anything left out comes from the global block."""

    enabled: bool | None = None
    endpoints: dict[str, list[EndpointFlag]] | None = Field(
        None, description="interface name (h2-eth1) -> endpoint flags; replaces the automatic ones"
    )
    limits: Limits | None = None
    scheduler: str | None = None
    congestion_control: str | None = None
    signal_ports: list[Port] = Field(
        default_factory=list, description="announce the first address again with these ports: one "
        "more subflow each over the same address pair (as ndiffports did)")


class Mptcp(_Model):
    enabled: bool = True
    path_manager: Literal["kernel"] = "kernel"
    endpoints: Literal["auto", "none"] = Field(
        "auto",
        description="auto: the server signals each extra interface (ADD_ADDR) and the client "
        "opens a subflow to each; none: only what hosts.<h>.endpoints says",
    )
    limits: Limits = Field(default_factory=Limits)
    scheduler: str = Field("default", pattern=r"^[a-z0-9_]{1,16}$")
    congestion_control: str | None = Field(
        None, pattern=r"^[a-z0-9_]{1,16}$", description="none = the kernel's default (recorded)"
    )
    checksum: bool | None = Field(
        None, description="net.mptcp.checksum_enabled of every host: DSS checksums, the only thing that notices a "
        "middlebox rewriting payload (RFC 8684 3.7); none = the kernel's default (off, recorded)")
    stale_loss_cnt: int | None = Field(
        None, ge=1, le=1000, description="net.mptcp.stale_loss_cnt of every host: a subflow is stale (the "
        "scheduler stops using it) after this many retransmission timeouts without progress; none = the "
        "kernel's default (4, recorded)")
    rto_min_ms: float | None = Field(
        None, ge=1, le=1000, description="net.ipv4.tcp_rto_min_us of every host, in ms: the least "
        "retransmission timeout of its TCP subflows (how soon a subflow on a failed path times out and "
        "turns stale); none = the kernel's default (200 ms, recorded)")
    hosts: dict[NodeName, MptcpHost] = Field(default_factory=dict)

    @field_validator("hosts")
    @classmethod
    def _names(cls, v: dict[str, MptcpHost]) -> dict[str, MptcpHost]:
        for h, s in v.items():
            for value in (s.scheduler, s.congestion_control):
                if value is not None and not re.fullmatch(r"[a-z0-9_]{1,16}", value):
                    raise ValueError(f"{h}: {value!r} is not a kernel algorithm name")
        return v


# --------------------------------------------------------------------------- traffic etc.

Protocol = Literal["mptcp", "tcp"]


class Traffic(_Model):
    """One flow from client to server (the shorthand), or -- with ``flows:`` / ``matrix:`` --
    what every flow shares: its default length, repetitions, first port, time margin."""

    client: NodeName | None = Field(None, description="the one flow's source (not with flows/matrix)")
    server: NodeName | None = Field(None, description="the one flow's destination (not with flows/matrix)")
    duration: float | None = Field(None, gt=0, le=3600, description="seconds per test")
    bytes: int | None = Field(None, gt=0, description="bytes per test instead of a duration")
    protocols: list[Protocol] = Field(default_factory=lambda: ["mptcp", "tcp"], min_length=1)
    repetitions: int = Field(3, ge=1, le=1000)
    parallel: int = Field(1, ge=1, le=128, description="iperf3 parallel streams (-P)")
    tool: Literal["iperf3", "transfer"] = Field(
        "iperf3", description="what sends: iperf3, or mptcplab's transfer (mptcplab.transfer), which sends a "
        "seeded byte stream that both ends hash, so the result says whether the data arrived intact "
        "(data_intact) -- what a middlebox experiment asks; iperf3 never looks at its data")
    port: int = Field(5201, ge=1024, le=65535)
    expect_subflows: int | None = Field(
        None, ge=1, le=9, description="subflows each MPTCP connection must reach; none = derived"
    )
    timeout_margin: float = Field(15, ge=1, le=3600, description="seconds beyond the test length before a test is abandoned")

    @model_validator(mode="after")
    def _length(self) -> "Traffic":
        if self.duration is None and self.bytes is None:
            self.duration = 10.0
        if self.duration is not None and self.bytes is not None:
            raise ValueError("give either duration or bytes, not both")
        if self.duration is not None and self.duration != int(self.duration):
            raise ValueError(f"duration: {self.duration:g} s is not a whole number of seconds: iperf3 "
                             "counts its test length (-t) in whole seconds (0.5 would run forever); "
                             "give 1 or more, or bytes: N")
        if self.client is not None and self.client == self.server:
            raise ValueError("client and server must be different hosts")
        if len(set(self.protocols)) != len(self.protocols):
            raise ValueError("protocols lists the same protocol twice")
        return self


Port = Annotated[int, AfterValidator(_between(1024, 65535, ""))]
AlgorithmName = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,16}$")]
def _csv_safe(v: str) -> str:
    """Labels go into flows.csv and rtt.csv and are read back (figures, --resume) by pandas,
    which would turn these into missing values, numbers or booleans."""
    if v.lower() in ("na", "nan", "null", "none", "inf", "infinity", "true", "false"):
        raise ValueError(f"{v!r} reads back from a CSV table as a value, not a name; choose another label")
    return v


FlowLabel = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$"), AfterValidator(_csv_safe)]


class FlowParams(_Model):
    """How a flow runs (a flow's own, or every flow of a matrix)."""

    protocol: Protocol = "mptcp"
    extra_subflows: int = Field(
        0, ge=0, le=7, description="MPTCP: the destination announces its first address again on this many "
        "fresh ports, one more subflow each (as ndiffports did)")
    start: float = Field(0.0, ge=0, le=3600, description="seconds after the test starts (all flows share one clock)")
    duration: float | None = Field(None, gt=0, le=3600, description="whole seconds; none: traffic.duration")
    bytes: int | None = Field(None, gt=0, le=10**12, description="bytes to send instead of a duration "
                              "(the flow completion time is measured)")
    congestion_control: AlgorithmName | None = Field(None, description="none: the source host's (mptcp block)")
    parallel: int = Field(1, ge=1, le=16, description="iperf3 parallel streams (-P)")

    @model_validator(mode="after")
    def _length(self) -> "FlowParams":
        if self.duration is not None and self.bytes is not None:
            raise ValueError("give either duration or bytes, not both")
        if self.duration is not None and self.duration != int(self.duration):
            raise ValueError(f"duration: {self.duration:g} s is not a whole number of seconds (iperf3 -t)")
        return self


class Flow(FlowParams):
    """One flow of every test: iperf3 from src to dst."""

    src: NodeName
    dst: NodeName
    label: FlowLabel | None = Field(None, description="names the flow in flows.csv and variants; none: SRC-DST")

    @model_validator(mode="after")
    def _ends(self) -> "Flow":
        if self.src == self.dst:
            raise ValueError("src and dst must be different hosts")
        return self


class Matrix(FlowParams):
    """A traffic matrix over a set of hosts, expanded (mptcplab.flows) into flows deterministically
    for a seed: permutation (every host sends to one other and receives from one, none to itself),
    random (every host to `per_host` random others), incast (senders to one target), all-to-all."""

    kind: Literal["permutation", "random", "incast", "all-to-all"]
    hosts: list[NodeName] | None = Field(None, description="the hosts taking part; none: every host")
    seed: int = Field(1, ge=0, le=2**31, description="the draw of permutation and random matrices")
    target: NodeName | None = Field(None, description="incast: the receiver; none: the first host")
    senders: int | None = Field(None, ge=1, le=1000, description="incast: how many senders; none: all others")
    per_host: int = Field(1, ge=1, le=64, description="random: destinations per source")


class Probe(_Model):
    """RTT probes during every test (ping, 10 Hz by default): latency under load, as a time series."""

    src: NodeName
    dst: NodeName
    interval: float = Field(0.1, ge=0.01, le=10, description="seconds between probes")
    label: FlowLabel | None = None

    @model_validator(mode="after")
    def _ends(self) -> "Probe":
        if self.src == self.dst:
            raise ValueError("src and dst must be different hosts")
        return self




#: What an event may do to a link (``link:``) or to a host's interface (``interface:``).
LINK_ACTIONS = ("down", "up", "set")
INTERFACE_ACTIONS = ("down", "up", "address-del", "address-add", "endpoint-del", "endpoint-add", "backup", "active")


class LinkEvent(_Model):
    """One change while a test runs, ``at`` seconds after the test starts.

    Of a link (``link: h1-s1``): ``down`` (the cable cut: frames dropped, carrier lost), ``up``
    again, or new parameters (``set``). Of a host's interface (``interface: h1-eth0``), what the
    host itself sees: ``down``/``up`` (the interface; its routes go with it), ``address-del`` /
    ``address-add`` (its address leaves or comes back: a handover), ``endpoint-del`` /
    ``endpoint-add`` (its MPTCP endpoint: REMOVE_ADDR, or subflows again), ``backup`` /
    ``active`` (the endpoint's backup flag: MP_PRIO on the subflows from that address)."""

    at: float = Field(ge=0, le=3600, description="seconds after the test starts")
    link: str | None = Field(None, description="a link of the topology by name (h1-s1)")
    interface: str | None = Field(None, description="a host's interface by name (h1-eth0)")
    action: Literal["down", "up", "set", "address-del", "address-add", "endpoint-del", "endpoint-add",
                    "backup", "active"]
    params: DirectionParams | None = Field(None, description="set: the link's new bw, delay, loss, queue, ...")

    @model_validator(mode="after")
    def _target(self) -> "LinkEvent":
        if (self.link is None) == (self.interface is None):
            raise ValueError("give either link: (a link of the topology) or interface: (a host's, h1-eth0)")
        if self.link is not None and self.action not in LINK_ACTIONS:
            raise ValueError(f"action: {self.action} acts on a host's interface: give interface: "
                             f"(a link takes {', '.join(LINK_ACTIONS)})")
        if self.interface is not None and self.action == "set":
            raise ValueError("action: set changes a link's parameters: give link:, not interface:")
        if (self.action == "set") != (self.params is not None):
            raise ValueError("params: give them with action: set, and only then")
        if self.params is not None and self.params.middlebox is not None:
            raise ValueError("params.middlebox: a middlebox is part of the link as built; events change its "
                             "bw, delay, jitter, loss and queue")
        return self


class Flap(_Model):
    """A link going down for ``down_for`` seconds every ``period`` seconds, ``count`` times."""

    link: str
    start: float = Field(0.0, ge=0, le=3600, description="first down, seconds after the test starts")
    period: float = Field(gt=0, le=3600, description="seconds from one down to the next")
    down_for: float = Field(gt=0, le=3600, description="seconds each down lasts")
    count: int = Field(1, ge=1, le=10_000)

    @model_validator(mode="after")
    def _fits(self) -> "Flap":
        if self.down_for >= self.period:
            raise ValueError(f"down_for: {self.down_for:g} s is not shorter than the period {self.period:g} s")
        return self


class RandomFailures(_Model):
    """A link failing at random: up and down times drawn from exponential distributions with these
    means, from ``random.Random(seed)`` -- the same schedule for a seed everywhere."""

    link: str
    start: float = Field(0.0, ge=0, le=3600)
    until: float = Field(gt=0, le=3600, description="no failure starts after this (s after the test starts)")
    mean_up: float = Field(gt=0, le=3600, description="mean seconds between failures")
    mean_down: float = Field(gt=0, le=3600, description="mean seconds a failure lasts")
    seed: int = Field(1, ge=0, le=2**31)


class Events(_Model):
    """What changes during every test (mptcplab.events expands it into one timeline)."""

    at: list[LinkEvent] = Field(default_factory=list, description="single changes at given times")
    flaps: list[Flap] = Field(default_factory=list)
    random: list[RandomFailures] = Field(default_factory=list)


def _expectation(text: str) -> str:
    """An expectation parses (mptcplab.expect: pure; errors name the column)."""
    from .expect import check

    return check(text)


class Capture(_Model):
    """Packet captures of every test (dumpcap), one pcapng file per host interface in raw/,
    gzipped; the MPTCP option census and the expectations read them."""

    interfaces: list[str] | None = Field(
        None, description="host interfaces to capture (h1-eth0, ...); none = every interface of the hosts "
        "traffic runs between (the client and the server, or each flow's)")
    snaplen: int = Field(128, ge=64, le=262144, description="bytes kept of each packet (128: Ethernet, IP "
                         "and TCP headers with every option)")
    max_mb: float = Field(50, gt=0, le=10_000, description="megabytes kept per test and interface: a ring "
                          "buffer keeps the last max_mb, so a capture never fills the disk")


class Controller(_Model):
    """Who forwards: `none` -- OVS learning switches (loop-free topologies only); `static` --
    the path core's rules installed with ovs-ofctl; `pox` -- the POX component
    controllers/mptcp_paths.py, steering each new subflow by its MPTCP options."""

    kind: Literal["none", "static", "pox"] = "none"
    policy: Literal["independent", "dependent", "mixed", "shortest", "ecmp"] = Field(
        "mixed", description="subflow i takes path i of the set: independent paths, dependent "
        "(sharing links), mixed (independent first), or shortest; ecmp: every switch hashes each TCP "
        "5-tuple onto one of its equal-cost next hops (OpenFlow select groups), as in a datacenter")
    openflow_port: Port | None = Field(
        None, description="POX's OpenFlow port on 127.0.0.1; none = POX binds a free one (read back "
        "from the kernel). A port held by another process is refused")

    @model_validator(mode="after")
    def _ecmp(self) -> "Controller":
        if self.policy == "ecmp" and self.kind == "none":
            raise ValueError("policy: ecmp needs a controller: kind: static (OpenFlow select groups) or "
                             "kind: pox (a hash per switch, reactively)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _no_pox_home(cls, data: Any) -> Any:
        """A spec names the controller kind, never a path: root runs the pox.py a POX checkout
        holds, so a shared spec naming one could run code as root. The checkout comes from
        --pox-home or $POX_HOME, chosen by whoever runs mptcplab. (``pox_home: null``, as older
        runs recorded it in their spec.yaml, names nothing and is dropped.)"""
        if isinstance(data, dict) and "pox_home" in data:
            if data["pox_home"] is not None:
                # A ValidationError located at pox_home: pydantic reports it as controller.pox_home.
                raise ValidationError.from_exception_data(cls.__name__, [InitErrorDetails(
                    type=PydanticCustomError(
                        "pox_home", "a spec may not name the POX checkout (root would run the pox.py "
                        "it points at): remove controller.pox_home and use --pox-home or POX_HOME"),
                    loc=("pox_home",), input=data["pox_home"])])
            data = {k: v for k, v in data.items() if k != "pox_home"}
        return data


class FlowOverride(_Model):
    """What a variant changes in a flow (fields left out stay as the flow says)."""

    protocol: Protocol | None = None
    extra_subflows: int | None = Field(None, ge=0, le=7)
    congestion_control: AlgorithmName | None = None


class Variant(_Model):
    """One way of running the traffic on the same network (compared in one summary). With
    ``flows:`` / ``matrix:``, ``protocol`` and ``extra_subflows`` apply to every flow and
    ``flows`` changes single flows by label ("*": all flows)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
    protocol: Protocol | None = Field(None, description="none: mptcp (one flow), the flows' own (flows)")
    flows: dict[str, FlowOverride] = Field(default_factory=dict, description="flow label (or *) -> changes")
    extra_subflows: int | None = Field(
        None, ge=0, le=7, description="the server announces its address again on this many fresh ports: "
        "one more subflow each over the same address pair (as ndiffports did); none: 0 (one flow), "
        "the flows' own (flows)")
    expect_subflows: int | None = Field(None, ge=1, le=9)
    backup: list[str] = Field(
        default_factory=list, description="host interfaces (h2-eth1) whose MPTCP endpoints are backups in this "
        "variant's tests: their subflows carry data only when no other subflow can")


class Sweep(_Model):
    """Points to run: a cartesian product of `parameters`, times each `zip` group moving together.
    Field paths: links.h1-s1.loss, links[2].bw, links.*.bw, links.h1-s1.up.delay, mptcp.scheduler..."""

    parameters: dict[str, list[Any]] = Field(default_factory=dict)
    zip: list[dict[str, list[Any]]] = Field(default_factory=list)
    shuffle: bool = Field(False, description="run the points in a random order drawn from seed")
    seed: int = 1
    pin: dict[Annotated[str, Field(pattern=r"^p[0-9]{3,6}$")],
              Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")]] = Field(
        default_factory=dict, description="distributed runs: point id -> the host (its hostname) that runs "
        "it, e.g. {p001: node1}; other points go to whichever worker is free. A pinned point whose host is "
        "lost runs elsewhere (recorded). Ignored by a local run")

    @field_validator("parameters")
    @classmethod
    def _non_empty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for k, values in v.items():
            if not values:
                raise ValueError(f"{k}: give at least one value")
        return v


class FigureSpec(_Model):
    """A custom plot drawn from summary.csv's columns."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,40}$")
    x: str
    y: str = "goodput_mbps"
    hue: str | None = None
    col: str | None = None
    kind: Literal["line", "bar", "box", "point", "strip"] = "line"


class Outputs(_Model):
    """Where results go. `dir` is checked without touching the disk beyond reading it: a leading
    ~ or ~user is expanded (under sudo, ~ is SUDO_USER's home, not root's), and system
    directories are refused, since runs write there as root."""

    dir: str = Field("results", description="results root; runs go to DIR/<experiment>/<run-id> "
                     "(~ is your home, also under sudo; system directories such as /etc or /usr are refused)")
    formats: list[Literal["pdf", "png", "svg"]] = Field(default_factory=lambda: ["pdf", "png"])

    #: Refused as outputs.dir (and anything under them), with /lib* and / itself; /var/tmp is allowed.
    SYSTEM_DIRS: ClassVar[frozenset[str]] = frozenset(
        {"bin", "boot", "dev", "etc", "proc", "run", "sbin", "sys", "usr", "var"})

    @staticmethod
    def expand_home(path: str) -> str:
        """'~/x' -> '<home>/x', '~user/x' -> '<user's home>/x'; under sudo ~ is SUDO_USER's home."""
        if not path.startswith("~"):
            return path
        user, _, rest = path[1:].partition("/")
        if user:
            try:
                home = pwd.getpwnam(user).pw_dir
            except KeyError:
                raise ValueError(f"{path!r}: there is no user {user!r}; give a path") from None
        else:
            sudo_user = os.environ.get("SUDO_USER")
            try:
                home = pwd.getpwnam(sudo_user).pw_dir if sudo_user else os.path.expanduser("~")
            except KeyError:
                home = os.path.expanduser("~")
        return os.path.join(home, rest) if rest else home

    @classmethod
    def system_dir(cls, path: str) -> str | None:
        """The system directory `path` is or lies under (as written, and with links resolved);
        None when it is none of them."""
        for p in dict.fromkeys((os.path.normpath(os.path.abspath(path)), os.path.realpath(path))):
            parts = p.split("/")[1:]
            if not parts or parts == [""]:
                return "/"
            if parts[0] == "var" and len(parts) > 1 and parts[1] == "tmp":
                continue
            if parts[0] in cls.SYSTEM_DIRS or parts[0].startswith("lib"):
                return "/" + parts[0]
        return None

    @field_validator("dir")
    @classmethod
    def _dir(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty; give a directory, e.g. results")
        v = cls.expand_home(v)
        system = cls.system_dir(v)
        if system:
            where = "is" if os.path.normpath(os.path.abspath(v)) == system else "is under"
            raise ValueError(f"{v} {where} the system directory {system}, where runs would write as root; "
                             "give a directory of your own, e.g. results, ~/mptcplab-results or /var/tmp/mptcplab")
        return v


class Emulation(_Model):
    """How links are emulated and how a run proves they are what the spec says."""

    shaper: Literal["auto", "netem", "userspace"] = Field(
        "auto", description="auto: htb+netem where the kernel has netem and the link needs nothing "
        "netem cannot do, else the user-space emulator")
    switch: Literal["auto", "ovs", "bridge"] = Field(
        "auto", description="the switches: ovs -- Open vSwitch (OpenFlow, needed by a controller); "
        "bridge -- the kernel's Linux bridge (no controller, far less CPU per Mbit/s where the kernel "
        "has no OVS module); auto -- bridge where no controller is needed, else ovs")
    check: Literal["none", "rtt", "full"] = Field(
        "rtt", description="self-check before measuring: RTT per path; full adds rate and loss")
    rtt_tolerance_pct: float = Field(5.0, ge=0, le=100)
    rtt_tolerance_ms: float = Field(
        1.0, ge=0, le=1000, description="RTT slack per link crossed (forwarding cost of emulator and switch)")
    rate_tolerance_pct: float = Field(10.0, ge=0, le=100)
    seed: int = Field(1, ge=1, description="seed of the emulator's loss and jitter draws")


class Measurements(_Model):
    interval: float = Field(0.1, ge=0.02, le=10, description="per-subflow sampling period, s")


class Experiment(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    topology: Topology
    mptcp: Mptcp = Field(default_factory=Mptcp)
    traffic: Traffic = Field(default_factory=Traffic)
    flows: list[Flow] = Field(default_factory=list, description="several flows per test (instead of "
                              "traffic.client/server)")
    matrix: Matrix | None = Field(None, description="a traffic matrix expanded into flows")
    probes: list[Probe] = Field(default_factory=list, description="RTT probes while the flows run")
    events: Events | None = Field(None, description="links that change while every test runs")
    capture: Capture | None = Field(None, description="packet captures of every test (or --capture)")
    controller: Controller = Field(default_factory=Controller)
    emulation: Emulation = Field(default_factory=Emulation)
    variants: list[Variant] | None = Field(
        None, description="named variants run on the same network (replace traffic.protocols)")
    sweep: Sweep | None = None
    figures: list[FigureSpec] = Field(default_factory=list, description="custom plots from summary.csv")
    expect: list[Annotated[str, AfterValidator(_expectation)]] = Field(
        default_factory=list, description="what must hold of every test (mptcplab.expect), e.g. "
        "'protocol=mptcp: subflows >= 2', 'options.MP_JOIN_SYN >= 1', 'mib.MPTcpExtMPFailTx == 0', "
        "'mean(goodput_mbps) >= 4'; the run exits 4 when one fails")
    measurements: Measurements = Field(default_factory=Measurements)
    outputs: Outputs = Field(default_factory=Outputs)

    @model_validator(mode="before")
    @classmethod
    def _one_flow_needs_hosts(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("flows") and data.get("matrix") is None \
                and isinstance(data.get("traffic"), dict):
            data = {**data, "traffic": {"client": MISSING_HOST, "server": MISSING_HOST, **data["traffic"]}}
        return data

    @model_validator(mode="after")
    def _cross(self) -> "Experiment":
        problems: list[str] = []
        hosts = self.topology.hosts
        problems += self._traffic_problems()
        for h, s in self.mptcp.hosts.items():
            if h not in hosts:
                problems.append(f"mptcp.hosts.{h}: no such host")
                continue
            valid = [i for i in self.host_interfaces() if host_of(i) == h]
            for ifname in s.endpoints or {}:
                if ifname not in valid:
                    problems.append(
                        f"mptcp.hosts.{h}.endpoints: {ifname!r} is not an interface of {h} "
                        f"({', '.join(valid)})"
                    )
        names = [v.name for v in self.variants or []]
        for v in self.variants or []:
            for i, ifname in enumerate(v.backup):
                if ifname not in self.host_interfaces():
                    problems.append(f"variants.{v.name}.backup[{i}]: {ifname!r} is not an interface of a host "
                                    f"(interfaces: {', '.join(self.host_interfaces())})")
        if len(set(names)) != len(names):
            problems.append("variants: names must be unique")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def multi_flow(self) -> bool:
        """Several flows per test (flows: / matrix:) rather than traffic's one client/server."""
        return bool(self.flows) or self.matrix is not None

    def _traffic_problems(self) -> list[str]:
        """One client/server, or flows and a matrix, never both; every host named exists."""
        hosts = self.topology.hosts
        problems: list[str] = []

        def known(where: str, h: str | None) -> None:
            if h is not None and h not in hosts:
                problems.append(f"{where}: {h!r} is not a host (hosts: {', '.join(hosts)})")

        tr = self.traffic
        if self.multi_flow:
            for role in ("client", "server"):
                if getattr(tr, role) is not None:
                    problems.append(f"traffic.{role}: with flows/matrix each flow names its hosts; remove "
                                    f"traffic.{role}")
        else:
            for role in ("client", "server"):
                if getattr(tr, role) is None:
                    problems.append(f"traffic.{role}: required field is missing (or give flows: / matrix:)")
        known("traffic.client", tr.client)
        known("traffic.server", tr.server)
        for i, f in enumerate(self.flows):
            known(f"flows[{i}].src", f.src)
            known(f"flows[{i}].dst", f.dst)
        for i, p in enumerate(self.probes):
            known(f"probes[{i}].src", p.src)
            known(f"probes[{i}].dst", p.dst)
        if self.matrix is not None:
            for j, h in enumerate(self.matrix.hosts or []):
                known(f"matrix.hosts[{j}]", h)
            known("matrix.target", self.matrix.target)
        for i, v in enumerate(self.variants or []):
            if not self.multi_flow and v.flows:
                problems.append(f"variants[{i}].flows: changes flows, but this spec has one client/server; "
                                "use protocol/extra_subflows, or give flows:")
            if self.multi_flow and v.expect_subflows is not None:
                problems.append(f"variants[{i}].expect_subflows: with flows each flow's subflows are worked out "
                                "from its extra_subflows and the hosts' endpoints; remove it")
        if self.probes and not self.multi_flow:
            problems.append("probes: run while the flows of a multi-flow test do; give flows: or matrix: "
                            "(one flow: flows: [{src: CLIENT, dst: SERVER}])")
        if self.multi_flow:
            problems += self._single_flow_fields()
            if tr.tool == "transfer":
                problems.append("traffic.tool: transfer runs one client/server flow (the flows of a multi-flow "
                                "test are iperf3); give traffic.client and traffic.server, or tool: iperf3")
        if tr.tool == "transfer" and tr.parallel != 1:
            problems.append(f"traffic.parallel: {tr.parallel}: the transfer tool sends one connection; remove "
                            "parallel or use tool: iperf3")
        problems += self._event_problems()
        for i, name in enumerate(self.capture.interfaces or [] if self.capture else []):
            if name not in self.host_interfaces():
                problems.append(f"capture.interfaces[{i}]: {name!r} is not an interface of a host "
                                f"(interfaces: {', '.join(self.host_interfaces())})")
        return problems

    def host_interfaces(self) -> list[str]:
        """Every host interface by name (h1-eth0, ...), as Mininet will name them."""
        ends = [n for l in self.topology.links for n in l.endpoints]
        return [f"{h}-eth{k}" for h in self.topology.hosts for k in range(ends.count(h))]

    def _event_problems(self) -> list[str]:
        """Events name links of the topology and fall inside the shortest test."""
        if self.events is None:
            return []
        names = [l.name for l in self.topology.links]
        problems = []
        length, why = self._test_length()
        for where, items in (("at", self.events.at), ("flaps", self.events.flaps), ("random", self.events.random)):
            for i, e in enumerate(items):
                interface = getattr(e, "interface", None)
                if interface is not None:
                    valid = self.host_interfaces()
                    if interface not in valid:
                        problems.append(f"events.{where}[{i}].interface: {interface!r} is not an interface of a "
                                        f"host (interfaces: {', '.join(valid)})")
                elif e.link not in names:
                    problems.append(f"events.{where}[{i}].link: {e.link!r} is not a link of the topology "
                                    f"(links: {', '.join(names)})")
                last = e.at if where == "at" else (e.start + (e.count - 1) * e.period + e.down_for if where == "flaps"
                                                   else e.until)
                if length is not None and last >= length:
                    problems.append(f"events.{where}[{i}]: ends at {last:g} s, not inside the {length:g} s test "
                                    f"({why})")
        if self.traffic.bytes is not None and not self.multi_flow:
            problems.append("events: need tests of a known length: give traffic.duration, not bytes")
        return problems

    def _test_length(self) -> tuple[float | None, str]:
        """How long every test runs, and the fields that say so: traffic.duration for one flow;
        with flows/matrix, when the last flow is due to end on the test's shared clock (its start
        plus its duration, its own or traffic.duration), as mptcplab.flows resolves them. (None,
        ...) when a flow sends a byte count: its end is not known, an event after the others end
        may still fall inside it."""
        tr = self.traffic
        if not self.multi_flow:
            return tr.duration, "traffic.duration"
        sources = [(f"flows[{i}]", f) for i, f in enumerate(self.flows)]
        sources += [("matrix", self.matrix)] if self.matrix is not None else []
        ends: list[tuple[float, str]] = []
        for where, f in sources:
            own = f.duration is not None or f.bytes is not None
            duration = f.duration if own else tr.duration
            if duration is None:
                return None, ""
            field = f"{where}.duration" if own else "traffic.duration"
            ends.append((f.start + duration, f"{where}.start {f.start:g} s + {field} {duration:g} s, the last "
                                             "flow to end"))
        return max(ends, key=lambda e: e[0]) if ends else (None, "")

    def _single_flow_fields(self) -> list[str]:
        """Fields of the one-flow shorthand a multi-flow spec would silently ignore."""
        problems = []
        if self.traffic.expect_subflows is not None:
            problems.append("traffic.expect_subflows: with flows each flow's subflows are worked out from its "
                            "extra_subflows and the hosts' endpoints; remove it")
        if self.traffic.parallel != 1:
            problems.append("traffic.parallel: with flows give each flow its own parallel: N")
        for h, over in self.mptcp.hosts.items():
            if over.signal_ports:
                problems.append(f"mptcp.hosts.{h}.signal_ports: with flows the destinations announce ports "
                                "for each flow's extra_subflows; remove signal_ports")
        ctl = self.controller
        if ctl.kind != "none" and ctl.policy not in ("ecmp", "shortest"):
            problems.append(f"controller.policy: {ctl.policy} places the subflows of one client/server connection "
                            "on a path set; with flows use policy: ecmp (a hash per 5-tuple, as a datacenter) "
                            "or shortest (one shortest path toward each address)")
        return problems


# --------------------------------------------------------------------------- loading


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _messages(err: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and "[" in p and p.endswith("]")))
        # Pydantic names the branch of a union/function validator in loc; drop those parts.
        loc = tuple(p for p in loc if p not in ("function-after", "function-before", "constrained-str"))
        msg = e["msg"]
        for lead in ("Value error, ", "Assertion failed, "):
            if msg.startswith(lead):
                msg = msg[len(lead):]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (see `mptcplab schema` for the allowed ones)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] in ("literal_error", "enum"):
            msg = f"{e.get('input')!r} is not allowed: {msg.removeprefix('Input should be ')}"
        where = _loc(loc)
        full = ".".join(x for x in (prefix, where) if x)
        # Model-level validators report several problems in one message, one per line.
        for part in msg.split("\n"):
            lines.append(f"{full}: {part}" if full else part)
    return lines


def _read_yaml(path: Path, what: str) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError([f"{what}: file {path} does not exist"]) from None
    except OSError as e:
        raise SpecError([f"{what}: cannot read {path}: {e.strerror}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpecError([f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})"]) from None


def resolve_spec_path(name: str | Path, experiments_dir: Path | None = None) -> Path:
    """A path that exists is used as is; a bare name is looked up in experiments/."""
    p = Path(name)
    if p.exists():
        return p
    candidates = []
    base = experiments_dir or Path("experiments")
    for cand in (base / p, base / f"{p}.yaml", base / f"{p}.yml"):
        candidates.append(cand)
        if cand.exists():
            return cand
    raise SpecError(
        [f"spec: {name} not found (looked at {p} and {', '.join(str(c) for c in candidates)})"]
    )


def load_spec(path: str | Path) -> Experiment:
    """Read and validate a spec file; the topology may be inline or a path relative to it."""
    path = Path(path)
    data = _read_yaml(path, "spec")
    if not isinstance(data, dict):
        raise SpecError([f"{path}: the spec must be a YAML mapping (name:, topology:, traffic:, ...)"])
    problems: list[str] = []
    topo = data.get("topology")
    topo_prefix = "topology"
    if isinstance(topo, str):
        topo_path = (path.parent / topo).resolve()
        try:
            topo = _read_yaml(topo_path, "topology")
        except SpecError as e:
            raise SpecError([f"topology: {p}" for p in e.problems]) from None
        topo_prefix = f"{data['topology']}:"
        if not isinstance(topo, dict):
            raise SpecError([f"{topo_prefix} the topology file must be a YAML mapping"])
        data = {**data, "topology": topo}
    try:
        return Experiment.model_validate(data)
    except ValidationError as err:
        for line in _messages(err):
            if topo_prefix != "topology" and line.startswith(("topology.", "topology:")):
                line = f"{topo_prefix} {line[len('topology.'):].lstrip()}"
            problems.append(line)
        raise SpecError(problems) from None


def parse_spec(data: dict[str, Any]) -> Experiment:
    """Validate an in-memory spec (tests, sweeps); same errors as load_spec."""
    try:
        return Experiment.model_validate(data)
    except ValidationError as err:
        raise SpecError(_messages(err)) from None


def json_schema() -> dict[str, Any]:
    return Experiment.model_json_schema()
