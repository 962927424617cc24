"""iperf3 command lines for each side of a test and for the self-check's UDP probes (pure)."""

from mptcplab.traffic import iperf3_argv


def test_mptcp_under_mptcpize_and_native():
    c = iperf3_argv("client", "mptcp", "mptcpize", port=5201, server_address="10.0.1.2", duration=10,
                    congestion_control="cubic")
    assert c[:3] == ["mptcpize", "run", "iperf3"] and c[c.index("-t") + 1] == "10" and "-C" in c
    s = iperf3_argv("server", "mptcp", "--mptcp", port=5201)
    assert s[0] == "iperf3" and s[-1] == "--mptcp" and ["-s", "-1"] == s[s.index("-s"):s.index("-s") + 2]
    assert "-C" not in iperf3_argv("server", "tcp", "", port=5201, congestion_control="cubic")


def test_bytes_instead_of_time_and_whole_seconds():
    c = iperf3_argv("client", "tcp", "", port=5201, server_address="10.0.1.2", nbytes=1000)
    assert "-n" in c and "-t" not in c
    assert iperf3_argv("client", "tcp", "", port=1, server_address="x", duration=3.0)[-1] == "3"


def test_udp_probe_of_the_self_check():
    c = iperf3_argv("client", "tcp", "", port=5299, server_address="10.0.2.2", bind="10.0.2.1", duration=3,
                    udp_mbps=6.5, length=1400)
    assert c[c.index("-b") + 1] == "6500000" and "-u" in c and c[c.index("-l") + 1] == "1400"
    assert c[c.index("-B") + 1] == "10.0.2.1"
