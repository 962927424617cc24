"""MPTCP v1 options from raw TCP bytes: what the POX component ties subflows with."""

import hashlib

import pytest

from helpers import build_mptcp_syn_options, tcp_header
from mptcplab.mptcp_options import ACK, SYN, MpCapable, MpJoin, mptcp_option, parse_tcp, token_of_key

KEY = bytes.fromhex("0123456789abcdef")


def test_token_is_top_32_bits_of_sha256():
    assert token_of_key(KEY) == int.from_bytes(hashlib.sha256(KEY).digest()[:4], "big")


def test_v1_syn_has_no_key():
    seg = parse_tcp(tcp_header(40000, 5201, SYN, b"\x02\x04\x05\xb4" + build_mptcp_syn_options("capable-syn")))
    opt = mptcp_option(seg)
    assert seg.syn and isinstance(opt, MpCapable) and opt.version == 1 and opt.sender_key is None


def test_synack_carries_server_key_and_join_its_token():
    synack = parse_tcp(tcp_header(5201, 40000, SYN | ACK, build_mptcp_syn_options("capable-synack", key=KEY)))
    opt = mptcp_option(synack)
    assert synack.synack and opt.sender_key == KEY and opt.sender_token == token_of_key(KEY)
    join = parse_tcp(tcp_header(40001, 20011, SYN, build_mptcp_syn_options("join-syn", token=token_of_key(KEY),
                                                                          address_id=3)))
    j = mptcp_option(join)
    assert isinstance(j, MpJoin) and j.token == opt.sender_token and j.address_id == 3


def test_plain_tcp_and_bad_headers():
    assert mptcp_option(parse_tcp(tcp_header(1, 2, SYN))) is None
    with pytest.raises(ValueError):
        parse_tcp(b"\x00" * 10)
    bad = bytearray(tcp_header(1, 2, SYN, b"\x1e\x30\x10\x81"))  # option length 48 past the header
    with pytest.raises(ValueError):
        parse_tcp(bytes(bad))
