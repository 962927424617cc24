/*
 * linkemu: a user-space link emulator for kernels without the netem qdisc.
 *
 * It sits in the middle of one link, in a network namespace of its own holding two veth ends,
 * "a" and "b", whose peers are the link's two interfaces (for example h1-eth0 and s1-eth1). Every
 * frame that arrives on one end leaves on the other after the model of that direction:
 *
 *   [middlebox] -> loss (random, or Gilbert-Elliott bursts) -> drop-tail queue (packets and/or
 *   bytes) -> serialization at `rate` (the whole Ethernet frame counts, as with htb) -> delay +
 *   jitter (order kept unless reordering is asked for) -> out.
 *
 * The queue is what waits for the serialiser, i.e. the bottleneck buffer; frames on the "wire"
 * (the delay line) are not counted against it.
 *
 * Protocol on stdin/stdout (one line each), used by mptcplab's EmuLink:
 *   after start:            prints "ready <pid>"; then waits for "go" (interfaces a and b exist)
 *   "set a2b|b2a|both k=v..": rate (bit/s), delay_us, jitter_us, loss (0..1), limit_pkts,
 *                             limit_bytes, reorder (0/1), ge_p ge_r ge_h ge_k (0..1, 0 = off),
 *                             and the middlebox's mb_strip, mb_drop_syn, mb_mss, mb_rewrite,
 *                             mb_rewrite_after, mb_rewrite_max, mb_split, mb_isn, mb_nat,
 *                             mb_coalesce, mb_coalesce_hold_us (below)
 *   "down" / "up":           drop everything (and flush queues) / forward again
 *   "stats":                 prints one JSON line of counters
 *   "quit" or EOF:           exits (its namespace, and with it the link, goes away)
 *
 * The middlebox (all off by default; while off, frames pass it untouched): what firewalls and NATs
 * in the wild do to MPTCP, applied to the frames of one direction before its link model. Only
 * TCP in IPv4 or IPv6 (behind at most two VLAN tags) is looked at (options, payload):
 *   mb_strip=none|all|syn|join|add_addr, or several joined by commas (a union): remove MPTCP
 *       options (kind 30) -- all of them, all in segments with SYN set (SYN and SYN/ACK), MP_JOIN
 *       (subtype 1) or ADD_ADDR (subtype 3) in any segment. Removal overwrites the option's bytes
 *       with NOPs, as many middleboxes do: header length, data offset and IP length stay the same.
 *   mb_drop_syn=0|1: drop segments with SYN set that carry an MPTCP option (a firewall that drops
 *       what it does not know). Decided on the segment as it arrived, before mb_strip.
 *   mb_mss=N: lower the MSS option of segments with SYN set to at most N bytes (0 = off).
 *   mb_rewrite=N: rewrite payload (0 = off): in every N-th data segment of the direction (a data
 *       segment: TCP payload, neither SYN nor RST), the payload byte at offset len/2 (the middle
 *       one; byte 0 of a 1-byte payload) is XORed with 0xff and the TCP checksum fixed, so that
 *       TCP does not notice and only MPTCP's DSS checksum can. Counted in mb_rewritten.
 *   mb_rewrite_after=K: ... but only after the first K data segments: the (K+N)-th, (K+2N)-th ...
 *       are rewritten (default 0). Data segments are counted while mb_rewrite is on, over every
 *       connection of the direction (retransmissions count too); a new "set" does not reset the count.
 *   mb_rewrite_max=M: ... and at most M segments of each connection (0 = no limit, the default): a
 *       box that corrupts one segment and is gone, so that what follows a fallback to TCP (which no
 *       checksum protects) arrives unchanged. While M > 0 the counts are per connection: a SYN
 *       (without ACK) passing in this direction starts both afresh -- the data segments counted for
 *       mb_rewrite_after and the segments rewritten -- so every connection (every subflow whose SYN
 *       passes here) meets the box alike, one connection after another.
 *   mb_split=B: split every data segment with more than B payload bytes in two (0 = off): the
 *       first B bytes, then the rest, as TSO does: same headers and TCP options in both (an MPTCP
 *       DSS mapping then covers both), IP length and checksum, TCP sequence number (+B) and
 *       checksum (computed afresh) made right for each, IPv4 ID +1 in the second, FIN and PSH on
 *       the second only, CWR on the first only. Ethernet padding is not copied. Not split: segments
 *       with URG set, and segments whose TCP (or IPv4 header) checksum is wrong -- they pass whole,
 *       so that a corrupt segment still leaves corrupt. Both frames then go through the link model
 *       (loss, queue, delay) one after the other, so tx_pkts can exceed rx_pkts. Segments split are
 *       counted in mb_split_frames.
 *   mb_isn=0|1: randomise initial sequence numbers, as many firewalls do: every TCP connection whose
 *       SYN (without ACK) passes in this direction gets a random 32-bit offset, which is added to the
 *       sequence number of its segments in this direction, and taken off the acknowledgment number
 *       (ACK set) and the edges of SACK blocks of its segments in the other direction, so both ends
 *       keep their own view. A repeated SYN with the same ISN (a retransmission) keeps its offset;
 *       one with another ISN is a new connection. The offsets come from a random stream of their
 *       own, seeded by --seed. Connections (keyed by the 4-tuple, IPv4 and IPv6) are held in a
 *       table of 4096; a new one evicts the least recently used (mb_isn_evicted), whose segments
 *       then pass untranslated. mb_isn_conns counts offsets drawn, mb_isn_rewritten segments
 *       changed in either direction. MPTCP must not notice: a DSS mapping's subflow sequence number
 *       is relative to the subflow's ISN (RFC 8684 section 3.3), and nothing else in its options
 *       carries a TCP sequence number.
 *   mb_nat=A|off: source NAT to the IPv4 address A, as a home router does. An IPv4 TCP connection
 *       whose SYN (without ACK) passes in this direction gets a public port, allocated from 20000
 *       up (a fresh one per connection, unique in the direction's table); its segments here leave
 *       from A and that port, and segments the other way to A and that port get the private address
 *       and port back. IPv4 header and TCP checksums are updated incrementally (the TCP pseudo header
 *       holds the address). As a real NAT: a segment here of a connection it does not know (no SYN
 *       seen: a SYN/ACK, a late segment, a connection evicted) is dropped, and so is a segment the
 *       other way to A that matches no connection; both counted in mb_nat_unknown. Not translated,
 *       passed as they are: IPv6, other protocols than TCP (ICMP errors about translated segments
 *       included), segments the other way to addresses other than A. MPTCP options are left alone,
 *       as real NATs leave them: ADD_ADDR and MP_JOIN keep naming private addresses. ARP: a request
 *       for A arriving the other way is answered by the box -- "A is at" the source MAC address of
 *       the last frame it translated (the host behind the NAT), the reply sent back out the side
 *       the request came from (through this direction's link model), the request going no further;
 *       until a frame has been translated, requests pass on unanswered. Without that a host on the
 *       other side's L2 segment could not find A. The table holds 4096 connections, the least
 *       recently used evicted (mb_nat_evicted, its port freed). Counted: mb_nat_conns, mb_nat_rewritten
 *       (segments translated either way), mb_nat_unknown, mb_nat_arp (requests answered); all in
 *       the stats of the direction that has mb_nat.
 *   mb_coalesce=N: coalesce segments (0 = off), as receive offload and some proxies do. A data
 *       segment (payload, none of SYN, FIN, RST, URG; TCP and IPv4 checksums right) with less than
 *       N payload bytes is held; while it is, the next segments of its connection in this direction
 *       are merged into it if contiguous (sequence number = the held one's + its payload length),
 *       data segments too, and the merged payload stays <= N: the merged segment keeps the FIRST
 *       segment's headers and TCP options (so a later segment's DSS mapping is lost and the merged
 *       data is not all covered by a mapping -- what RFC 8684 sections 3.3.5 and 3.7 worry about),
 *       takes the latest acknowledgment number and window, PSH if any had it; IP length, IPv4
 *       checksum (the ID stays the first's) and TCP checksum are computed afresh; Ethernet padding
 *       is dropped. Counted: mb_coalesced (segments merged away). One segment is held per direction:
 *       segments of other connections pass meanwhile. The held segment leaves (into the link model)
 *       when a segment of its connection arrives that cannot be merged -- the held one first, then
 *       that one, which is not held in turn -- or when it has been held mb_coalesce_hold_us
 *       microseconds (default 1000, 1..1000000) since its first segment arrived: the main loop wakes
 *       for that as for a departure. It leaves as it is (not split by mb_split). A merged frame
 *       longer than the interface's MTU cannot be sent (tx_err): keep N below MTU - headers.
 * In that order: drop; the other direction's translations undone (mb_isn's offset off ack and
 * SACK, then mb_nat's address), then this direction's made (mb_nat, then mb_isn); strip, clamp,
 * rewrite, coalesce, split. Dropping first means a refused SYN creates no state. The way back undoes in the
 * reverse order of the way out, so each function meets the numbers it made (mb_isn's table is keyed
 * by the tuple after NAT). The translations come before the option and payload functions so that
 * those see the segment as it leaves; coalescing comes last but for split, so that it merges
 * segments as they would leave, and what it releases is not cut again. Skipped frames (below)
 * are neither translated nor held. Changes to
 * options and payload update the
 * TCP checksum incrementally (RFC 1624), so a segment that arrived with a bad checksum leaves with
 * one (checksum offloads are off on these veths, so the checksum in the frame is the real one).
 * Not inspected, passed untouched and counted as mb_skipped: IPv4 with IP options, IP fragments, a
 * frame shorter than its IP length, TCP behind IPv6 extension headers, a TCP header longer than
 * the segment, a malformed option list (a length of 0 or 1, or one running past the header).
 * Frames that arrive while the link is down are dropped before the middlebox sees them ("down"
 * drops a held segment too).
 *
 * Test mode, "linkemu --filter [--seed N]": the middlebox alone -- no namespace, no sockets, no
 * clock. Lines on stdin: the commands above (set, stats, quit), and "frame a2b|b2a <hex>", answered with one line:
 * "frame <hex>" (the frame as it leaves the middlebox), "frames N <hex>..." (N > 1 frames, in the
 * order they leave: mb_split made two), "drop", or "reply <hex>": the frame was consumed and the box
 * sends this one back out the side it came from (mb_nat's ARP reply; in a "frame b2a" line, it
 * would leave on side b), or "held" (mb_coalesce holds it, alone or merged: nothing leaves now).
 * "flush a2b|b2a" (test mode only) lets the held segment leave instead of a timer: answered
 * "frame <hex>", or "none" when nothing is held. No loss, queue or delay.
 *
 * Build: cc -O2 -o linkemu linkemu.c -lm   (Linux >= 4.20 for PACKET_IGNORE_OUTGOING)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/if_packet.h>
#include <math.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

#define BATCH 64
#define FRAME_MAX 65536

struct pkt {
	uint64_t dep;   /* departure time, ns */
	uint64_t seq;   /* arrival order: ties in the heap leave in arrival order */
	uint32_t len;
	unsigned char data[];
};

struct backlog_ent { uint64_t tx_end; uint32_t len; };

/* A TCP connection's 4-tuple as the segments of one direction carry it (IPv4 addresses in the
 * first 4 bytes of src and dst). Zeroed before it is filled: keys are hashed and compared as bytes. */
struct ckey {
	uint8_t v6, pad;
	uint16_t sport, dport; /* network order */
	uint8_t src[16], dst[16];
};

#define CT_SIZE    4096u /* connections a table holds: the least recently used one is evicted */
#define CT_BUCKETS 8192u /* a power of two */
#define NAT_PORT_MIN 20000 /* public ports are allocated from here up */

/* One connection the box translates (ISN randomisation or NAT), in the table of the direction its
 * SYN passed. */
struct conn {
	struct ckey k[2];      /* k[0]: the tuple as the segments leave (after the direction's NAT);
	                          NAT only, k[1]: as they arrive (the private address and port) */
	uint32_t chain[2];     /* the next entry in k[i]'s bucket: index + 1, 0 = none */
	uint32_t newer, older; /* the LRU list: index + 1, 0 = none */
	uint32_t isn, off;     /* ISN: the SYN's sequence number as it arrived, the offset added */
};

struct ctable {
	struct conn *c;        /* CT_SIZE entries, allocated on first use */
	uint32_t n;
	int nat;               /* two keys per entry, ports allocated */
	uint32_t bucket[2][CT_BUCKETS]; /* index + 1 */
	uint32_t newest, oldest;        /* index + 1 */
	uint64_t evicted;
	uint16_t next_port;             /* NAT: where the search for a free public port starts */
	uint8_t ports[8192];            /* NAT: public ports in use, a bit each */
};

/* One frame, looked at by parse(). */
enum { SEG_OTHER, SEG_ARP, SEG_SKIP, SEG_TCP };
struct seg {
	uint32_t l3;           /* the IP (or ARP) header's offset in the frame */
	unsigned char *ip, *th;
	int v6;
	uint32_t seglen, hl;   /* TCP header and payload; TCP header */
	uint8_t mptcp[20], sack[20], mss; /* offsets of those options in the TCP header (mss: 0 = none) */
	int n_mptcp, n_sack;
};

/* What leaves the middlebox for one frame that arrived. */
struct mb_out {
	int n;                 /* frames that go on, in this order (0: dropped, or held) */
	unsigned char *f[3];
	uint32_t len[3];
	unsigned char *reply; /* a frame back out where this one came from (an ARP reply), or NULL */
	uint32_t reply_len;
	int held;             /* mb_coalesce: 1 the frame is held now, 2 merged into the held one */
};

struct dir {
	const char *name;
	int rx, tx;
	/* model */
	double rate;          /* bit/s; 0 = not shaped */
	int64_t delay_ns, jitter_ns;
	double loss;          /* probability */
	double ge_p, ge_r, ge_h, ge_k; /* Gilbert-Elliott: P(G->B), P(B->G), 1-loss in B, 1-loss in G */
	int ge_bad;
	uint32_t limit_pkts;  /* 0 = no limit */
	uint64_t limit_bytes; /* 0 = no limit */
	int reorder;
	/* middlebox, before the model */
	unsigned mb_strip;    /* MB_* bits; 0 = none */
	int mb_drop_syn;
	uint32_t mb_mss;      /* 0 = off */
	uint32_t mb_rewrite;  /* every N-th data segment; 0 = off */
	uint64_t mb_rewrite_after;
	uint64_t mb_rewrite_max; /* rewrites per connection at most; 0 = no limit */
	uint64_t mb_conn_rewritten; /* rewrites since the last SYN (with mb_rewrite_max) */
	uint32_t mb_split;    /* payload bytes; 0 = off */
	uint64_t mb_data_segs; /* data segments seen while mb_rewrite is on */
	int mb_isn;           /* randomise the ISN of connections whose SYN passes here */
	struct ctable isn_ct;
	int mb_nat;           /* source NAT to nat_addr for IPv4 connections whose SYN passes here */
	uint8_t nat_addr[4];
	uint8_t nat_mac[6];   /* the host behind the NAT: the source of the last frame translated */
	int nat_mac_known;
	struct ctable nat_ct;
	uint32_t mb_coalesce;  /* merged payload bytes at most; 0 = off */
	uint64_t mb_hold_ns;   /* how long a segment is held at most */
	unsigned char *held;   /* the segment held (FRAME_MAX bytes, allocated on first use) */
	uint32_t held_len, held_l3, held_hl, held_plen, held_seq; /* held_len 0: none */
	int held_v6;
	struct ckey held_key;
	uint64_t held_at;      /* when the first of its segments arrived */
	/* state */
	uint64_t next_free, last_dep, seq;
	struct pkt **heap; size_t heap_n, heap_cap;
	struct backlog_ent *bl; size_t bl_head, bl_n, bl_cap; uint64_t bl_bytes;
	/* counters */
	uint64_t rx_pkts, rx_bytes, tx_pkts, tx_bytes, drop_loss, drop_queue, drop_down, tx_err;
	uint64_t max_backlog_pkts, max_backlog_bytes;
	uint64_t mb_stripped_frames, mb_stripped_options, mb_dropped_syn, mb_mss_clamped, mb_skipped;
	uint64_t mb_rewritten, mb_split_frames;
	uint64_t mb_isn_conns, mb_isn_rewritten;
	uint64_t mb_nat_conns, mb_nat_rewritten, mb_nat_unknown, mb_nat_arp;
	uint64_t mb_coalesced;
};

static struct dir dirs[2];
static int link_down;
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t isn_rng = 0x9E3779B97F4A7C15ull; /* mb_isn's offsets: a stream of its own */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static double urand(void) /* xorshift64*, [0,1) */
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}

static void die(const char *what)
{
	fprintf(stderr, "linkemu: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* ---------------------------------------------------------------- heap by (dep, seq) */

static int before(const struct pkt *x, const struct pkt *y)
{
	return x->dep < y->dep || (x->dep == y->dep && x->seq < y->seq);
}

static void heap_push(struct dir *d, struct pkt *p)
{
	if (d->heap_n == d->heap_cap) {
		d->heap_cap = d->heap_cap ? d->heap_cap * 2 : 1024;
		d->heap = realloc(d->heap, d->heap_cap * sizeof(*d->heap));
		if (!d->heap)
			die("realloc");
	}
	size_t i = d->heap_n++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (!before(p, d->heap[parent]))
			break;
		d->heap[i] = d->heap[parent];
		i = parent;
	}
	d->heap[i] = p;
}

static struct pkt *heap_pop(struct dir *d)
{
	struct pkt *top = d->heap[0], *last = d->heap[--d->heap_n];
	size_t i = 0;
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		const struct pkt *mp = last;
		if (l < d->heap_n && before(d->heap[l], mp)) { m = l; mp = d->heap[l]; }
		if (r < d->heap_n && before(d->heap[r], mp)) { m = r; }
		if (m == i)
			break;
		d->heap[i] = d->heap[m];
		i = m;
	}
	if (d->heap_n)
		d->heap[i] = last;
	return top;
}

/* ---------------------------------------------------------------- backlog (the queue) */

static void backlog_expire(struct dir *d, uint64_t now)
{
	while (d->bl_n && d->bl[d->bl_head].tx_end <= now) {
		d->bl_bytes -= d->bl[d->bl_head].len;
		d->bl_head = (d->bl_head + 1) % d->bl_cap;
		d->bl_n--;
	}
}

static void backlog_add(struct dir *d, uint64_t tx_end, uint32_t len)
{
	if (d->bl_n == d->bl_cap) {
		size_t cap = d->bl_cap ? d->bl_cap * 2 : 1024;
		struct backlog_ent *nb = malloc(cap * sizeof(*nb));
		if (!nb)
			die("malloc");
		for (size_t i = 0; i < d->bl_n; i++)
			nb[i] = d->bl[(d->bl_head + i) % d->bl_cap];
		free(d->bl);
		d->bl = nb;
		d->bl_cap = cap;
		d->bl_head = 0;
	}
	d->bl[(d->bl_head + d->bl_n) % d->bl_cap] = (struct backlog_ent){tx_end, len};
	d->bl_n++;
	d->bl_bytes += len;
	if (d->bl_n > d->max_backlog_pkts)
		d->max_backlog_pkts = d->bl_n;
	if (d->bl_bytes > d->max_backlog_bytes)
		d->max_backlog_bytes = d->bl_bytes;
}

/* ---------------------------------------------------------------- the middlebox */

#define MB_ALL      1u /* every MPTCP option */
#define MB_SYN      2u /* every MPTCP option of segments with SYN set */
#define MB_JOIN     4u /* MP_JOIN */
#define MB_ADD_ADDR 8u /* ADD_ADDR */
static const char *const mb_names[] = {"all", "syn", "join", "add_addr"}; /* bit i = 1 << i */

#define OPT_EOL   0
#define OPT_NOP   1
#define OPT_MSS   2
#define OPT_SACK  5
#define OPT_MPTCP 30
#define MPTCP_MP_JOIN  1
#define MPTCP_ADD_ADDR 3

/* "join,add_addr" -> MB_JOIN | MB_ADD_ADDR; -1 for an unknown name. */
static int mb_parse(const char *v)
{
	unsigned mode = 0;
	while (*v) {
		size_t n = strcspn(v, ","), i = 0;
		if (n != 4 || strncmp(v, "none", 4)) { /* "none" adds nothing */
			while (i < 4 && (strlen(mb_names[i]) != n || strncmp(v, mb_names[i], n)))
				i++;
			if (i == 4)
				return -1;
			mode |= 1u << i;
		}
		v += n + (v[n] == ',');
	}
	return (int)mode;
}

static void mb_name(unsigned mode, char *out, size_t size)
{
	snprintf(out, size, "%s", mode ? "" : "none");
	for (int i = 0; i < 4; i++)
		if (mode & (1u << i)) {
			size_t n = strlen(out);
			snprintf(out + n, size - n, "%s%s", n ? "," : "", mb_names[i]);
		}
}

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_PSH 0x08
#define TH_ACK 0x10
#define TH_URG 0x20
#define TH_CWR 0x80

/* One's complement sum of n bytes (an odd last byte padded with a zero), not folded: n < 64 KiB. */
static uint32_t csum_add(uint32_t sum, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (n & 1)
		sum += (uint32_t)p[n - 1] << 8;
	return sum;
}

static uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/* RFC 1624: the checksum at ck after 16-bit words summing to `was` became ones summing to `now`:
 * HC' = ~(~HC + ~m + m'). */
static void csum_update(unsigned char *ck, uint16_t was, uint16_t now)
{
	uint16_t c = ck[0] << 8 | ck[1];
	c = (uint16_t)~csum_fold((uint32_t)(uint16_t)~c + (uint16_t)~was + now);
	ck[0] = c >> 8;
	ck[1] = c & 0xff;
}

/* The folded sum of a TCP segment (th, seglen bytes, checksum field as it is) and its pseudo
 * header: 0xffff when the checksum is right. */
static uint16_t tcp_sum(const unsigned char *ip, int v6, const unsigned char *th, uint32_t seglen)
{
	uint32_t sum = csum_add(0, ip + (v6 ? 8 : 12), v6 ? 32 : 8) + 6 + seglen;
	return csum_fold(csum_add(sum, th, seglen));
}

static void tcp_checksum_set(const unsigned char *ip, int v6, unsigned char *th, uint32_t seglen)
{
	th[16] = th[17] = 0;
	uint16_t c = (uint16_t)~tcp_sum(ip, v6, th, seglen);
	th[16] = c >> 8;
	th[17] = c & 0xff;
}

static void ipv4_checksum_set(unsigned char *ip)
{
	ip[10] = ip[11] = 0;
	uint16_t c = (uint16_t)~csum_fold(csum_add(0, ip, 20));
	ip[10] = c >> 8;
	ip[11] = c & 0xff;
}

/* One segment (IP header at ip, v6 or not, TCP header th of hl bytes, plen payload bytes) in two:
 * f keeps the first `at` payload bytes, f2 gets the rest behind a copy of every header; the frames'
 * lengths in *len and *len2 (Ethernet padding dropped). Checksums are computed afresh. */
static void split_segment(unsigned char *f, uint32_t *len, unsigned char *f2, uint32_t *len2,
			  unsigned char *ip, int v6, unsigned char *th, uint32_t hl, uint32_t plen, uint32_t at)
{
	uint32_t head = (uint32_t)(th + hl - f), rest = plen - at;
	memcpy(f2, f, head);
	memcpy(f2 + head, th + hl + at, rest);
	*len = head + at;
	*len2 = head + rest;
	unsigned char *ip2 = f2 + (ip - f), *th2 = f2 + (th - f);
	for (int k = 0; k < 2; k++) {
		unsigned char *i = k ? ip2 : ip;
		uint32_t seglen = hl + (k ? rest : at);
		if (v6) {
			i[4] = seglen >> 8;
			i[5] = seglen & 0xff;
		} else {
			i[2] = (20 + seglen) >> 8;
			i[3] = (20 + seglen) & 0xff;
		}
	}
	if (!v6) {
		uint16_t id = (uint16_t)((ip[4] << 8 | ip[5]) + 1);
		ip2[4] = id >> 8;
		ip2[5] = id & 0xff;
		ipv4_checksum_set(ip);
		ipv4_checksum_set(ip2);
	}
	uint32_t seq = (uint32_t)th[4] << 24 | th[5] << 16 | th[6] << 8 | th[7];
	seq += at;
	th2[4] = seq >> 24;
	th2[5] = (seq >> 16) & 0xff;
	th2[6] = (seq >> 8) & 0xff;
	th2[7] = seq & 0xff;
	th[13] &= (unsigned char)~(TH_FIN | TH_PSH);
	th2[13] &= (unsigned char)~TH_CWR;
	tcp_checksum_set(ip, v6, th, hl + at);
	tcp_checksum_set(ip2, v6, th2, hl + rest);
}

static int seg_sums_ok(const struct seg *s)
{
	return tcp_sum(s->ip, s->v6, s->th, s->seglen) == 0xffff &&
	       (s->v6 || csum_fold(csum_add(0, s->ip, 20)) == 0xffff);
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = (v >> 16) & 0xff;
	p[2] = (v >> 8) & 0xff;
	p[3] = v & 0xff;
}

/* The frame f of len bytes, looked at: SEG_TCP (s filled: headers, the option list checked, where
 * the MPTCP, MSS and SACK options are), SEG_ARP (s->l3 only), SEG_SKIP (TCP the box may not
 * inspect: see the header comment) or SEG_OTHER. */
static int parse(unsigned char *f, uint32_t len, struct seg *s)
{
	uint32_t off = 14;
	s->n_mptcp = s->n_sack = 0;
	s->mss = 0;
	if (len < off)
		return SEG_OTHER;
	unsigned type = f[12] << 8 | f[13];
	for (int tags = 0; tags < 2 && (type == 0x8100 || type == 0x88a8); tags++) {
		if (len < off + 4)
			return SEG_OTHER;
		type = f[off + 2] << 8 | f[off + 3];
		off += 4;
	}
	s->l3 = off;
	if (type == 0x0806)
		return SEG_ARP;
	unsigned char *ip = f + off, *th;
	uint32_t avail = len - off, seglen;
	int v6 = type == 0x86dd;
	if (type == 0x0800) {
		if (avail < 20 || ip[0] >> 4 != 4 || ip[9] != 6)
			return SEG_OTHER;
		uint32_t tot = ip[2] << 8 | ip[3];
		/* IP options, a fragment (MF or an offset), shorter than its IP length: not inspected */
		if ((ip[0] & 15) != 5 || (ip[6] & 0x3f) || ip[7] || tot > avail || tot < 40)
			return SEG_SKIP;
		th = ip + 20;
		seglen = tot - 20;
	} else if (v6) {
		if (avail < 40 || ip[0] >> 4 != 6)
			return SEG_OTHER;
		unsigned nh = ip[6];
		uint32_t plen = ip[4] << 8 | ip[5], at = 40;
		/* Extension headers are walked only to learn whether TCP is behind them. */
		while (nh == 0 || nh == 43 || nh == 44 || nh == 51 || nh == 60) {
			if (avail < at + 8)
				return SEG_SKIP;
			uint32_t n = nh == 44 ? 8 : nh == 51 ? (ip[at + 1] + 2u) * 4 : (ip[at + 1] + 1u) * 8;
			nh = ip[at];
			at += n;
		}
		if (nh != 6)
			return SEG_OTHER;
		if (at != 40 || plen < 20 || 40 + plen > avail)
			return SEG_SKIP;
		th = ip + 40;
		seglen = plen;
	} else {
		return SEG_OTHER;
	}
	uint32_t hl = (th[12] >> 4) * 4u;
	if (hl < 20 || hl > seglen)
		return SEG_SKIP;
	/* Parse the whole option list first: a malformed one is left alone. */
	for (uint32_t i = 20; i < hl;) {
		if (th[i] == OPT_EOL)
			break;
		if (th[i] == OPT_NOP) {
			i++;
			continue;
		}
		if (i + 1 >= hl || th[i + 1] < 2 || i + th[i + 1] > hl)
			return SEG_SKIP;
		if (th[i] == OPT_MPTCP)
			s->mptcp[s->n_mptcp++] = (uint8_t)i;
		else if (th[i] == OPT_MSS && th[i + 1] == 4 && !s->mss)
			s->mss = (uint8_t)i;
		else if (th[i] == OPT_SACK)
			s->sack[s->n_sack++] = (uint8_t)i;
		i += th[i + 1];
	}
	s->ip = ip;
	s->th = th;
	s->v6 = v6;
	s->seglen = seglen;
	s->hl = hl;
	return SEG_TCP;
}

/* ---------------------------------------------------------------- connection tables (ISN, NAT) */

static uint32_t ct_hash(const struct ckey *k)
{
	const uint8_t *p = (const uint8_t *)k;
	uint32_t h = 2166136261u; /* FNV-1a */
	for (size_t i = 0; i < sizeof(*k); i++)
		h = (h ^ p[i]) * 16777619u;
	return h & (CT_BUCKETS - 1);
}

/* The segment's 4-tuple, or (reversed) that of the opposite direction's segments. */
static void seg_key(const struct seg *s, struct ckey *k, int reversed)
{
	size_t n = s->v6 ? 16 : 4;
	const unsigned char *src = s->ip + (s->v6 ? 8 : 12), *dst = src + n;
	memset(k, 0, sizeof(*k));
	k->v6 = (uint8_t)s->v6;
	memcpy(reversed ? k->dst : k->src, src, n);
	memcpy(reversed ? k->src : k->dst, dst, n);
	memcpy(reversed ? &k->dport : &k->sport, s->th, 2);
	memcpy(reversed ? &k->sport : &k->dport, s->th + 2, 2);
}

static void lru_unlink(struct ctable *t, uint32_t i)
{
	struct conn *c = &t->c[i - 1];
	if (c->newer)
		t->c[c->newer - 1].older = c->older;
	else
		t->newest = c->older;
	if (c->older)
		t->c[c->older - 1].newer = c->newer;
	else
		t->oldest = c->newer;
	c->newer = c->older = 0;
}

static void lru_push(struct ctable *t, uint32_t i)
{
	struct conn *c = &t->c[i - 1];
	c->older = t->newest;
	c->newer = 0;
	if (t->newest)
		t->c[t->newest - 1].newer = i;
	else
		t->oldest = i;
	t->newest = i;
}

/* The entry whose key `which` is k (made the most recently used), or NULL. */
static struct conn *ct_find(struct ctable *t, int which, const struct ckey *k)
{
	if (!t->c)
		return NULL;
	for (uint32_t i = t->bucket[which][ct_hash(k)]; i; i = t->c[i - 1].chain[which])
		if (!memcmp(&t->c[i - 1].k[which], k, sizeof(*k))) {
			lru_unlink(t, i);
			lru_push(t, i);
			return &t->c[i - 1];
		}
	return NULL;
}

static void port_mark(struct ctable *t, uint16_t port, int used)
{
	if (used)
		t->ports[port / 8] |= (uint8_t)(1u << (port % 8));
	else
		t->ports[port / 8] &= (uint8_t)~(1u << (port % 8));
}

/* A new entry, the most recently used, under k0 (and k1 in a NAT's table); when the table is full
 * the least recently used entry makes room (a NAT's public port freed), counted in t->evicted. */
static struct conn *ct_add(struct ctable *t, const struct ckey *k0, const struct ckey *k1)
{
	uint32_t i, nkeys = t->nat ? 2 : 1;
	if (!t->c && !(t->c = calloc(CT_SIZE, sizeof(*t->c))))
		die("calloc");
	if (t->n < CT_SIZE) {
		i = ++t->n;
	} else {
		i = t->oldest;
		lru_unlink(t, i);
		for (uint32_t w = 0; w < nkeys; w++) {
			uint32_t *p = &t->bucket[w][ct_hash(&t->c[i - 1].k[w])];
			while (*p != i)
				p = &t->c[*p - 1].chain[w];
			*p = t->c[i - 1].chain[w];
		}
		if (t->nat)
			port_mark(t, ntohs(t->c[i - 1].k[0].sport), 0);
		t->evicted++;
	}
	struct conn *c = &t->c[i - 1];
	memset(c, 0, sizeof(*c));
	c->k[0] = *k0;
	if (k1)
		c->k[1] = *k1;
	for (uint32_t w = 0; w < nkeys; w++) {
		uint32_t h = ct_hash(&c->k[w]);
		c->chain[w] = t->bucket[w][h];
		t->bucket[w][h] = i;
	}
	lru_push(t, i);
	return c;
}

/* ---------------------------------------------------------------- ISN randomisation */

/* Offsets come from a stream of their own (splitmix64, seeded like the loss generator by --seed):
 * turning mb_isn on does not change which frames the loss model drops. */
static uint32_t isn_draw(void)
{
	uint64_t z = (isn_rng += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return (uint32_t)((z ^ (z >> 31)) >> 32);
}

/* Direction d randomises ISNs, s is one of its segments: shift the sequence number of a connection
 * whose SYN passed here. A SYN starts a connection (a new offset) unless it repeats the ISN of the
 * entry it finds (a retransmitted SYN keeps its offset). */
static void isn_out(struct dir *d, struct seg *s)
{
	struct ckey k;
	unsigned char *th = s->th;
	uint32_t seq = get32(th + 4);
	seg_key(s, &k, 0);
	struct conn *c = ct_find(&d->isn_ct, 0, &k);
	if ((th[13] & (TH_SYN | TH_ACK)) == TH_SYN && (!c || c->isn != seq)) {
		if (!c)
			c = ct_add(&d->isn_ct, &k, NULL);
		c->isn = seq;
		do
			c->off = isn_draw();
		while (!c->off);
		d->mb_isn_conns++;
	}
	if (!c)
		return;
	uint16_t was = csum_fold(csum_add(0, th + 4, 4));
	put32(th + 4, seq + c->off);
	csum_update(th + 16, was, csum_fold(csum_add(0, th + 4, 4)));
	d->mb_isn_rewritten++;
}

/* Direction o randomises ISNs, s goes the other way: take the offset off the acknowledgment
 * number (when ACK is set) and off the edges of SACK blocks, so that the sender's view stays its own. */
static void isn_back(struct dir *o, struct seg *s)
{
	struct ckey k;
	unsigned char *th = s->th;
	seg_key(s, &k, 1);
	struct conn *c = ct_find(&o->isn_ct, 0, &k);
	if (!c || (!(th[13] & TH_ACK) && !s->n_sack))
		return;
	/* seq, ack and the options: one sum, 16-bit words aligned with the header's */
	uint16_t was = csum_fold(csum_add(csum_add(0, th + 4, 8), th + 20, s->hl - 20));
	if (th[13] & TH_ACK)
		put32(th + 8, get32(th + 8) - c->off);
	for (int k = 0; k < s->n_sack; k++) {
		unsigned char *o = th + s->sack[k];
		for (uint32_t e = 2; e + 4 <= o[1]; e += 4)
			put32(o + e, get32(o + e) - c->off);
	}
	csum_update(th + 16, was, csum_fold(csum_add(csum_add(0, th + 4, 8), th + 20, s->hl - 20)));
	o->mb_isn_rewritten++;
}

/* ---------------------------------------------------------------- NAT */

/* A free public port, from NAT_PORT_MIN up, wrapping (the table holds fewer connections than there
 * are ports: one is always free). */
static uint16_t nat_port_alloc(struct ctable *t)
{
	for (;;) {
		uint16_t p = t->next_port < NAT_PORT_MIN ? NAT_PORT_MIN : t->next_port;
		t->next_port = p == 65535 ? NAT_PORT_MIN : p + 1;
		if (!(t->ports[p / 8] & (1u << (p % 8)))) {
			port_mark(t, p, 1);
			return p;
		}
	}
}

/* An IPv4 address and the TCP port beside it in the segment become to_addr, to_port (network
 * order): the IPv4 header checksum and the TCP checksum (its pseudo header holds the address)
 * updated incrementally. */
static void nat_rewrite(struct seg *s, unsigned char *addr, unsigned char *port, const uint8_t *to_addr,
			uint16_t to_port)
{
	uint16_t ip_was = csum_fold(csum_add(0, addr, 4)), tcp_was = csum_fold(csum_add(ip_was, port, 2));
	memcpy(addr, to_addr, 4);
	memcpy(port, &to_port, 2);
	uint16_t ip_now = csum_fold(csum_add(0, addr, 4)), tcp_now = csum_fold(csum_add(ip_now, port, 2));
	csum_update(s->ip + 10, ip_was, ip_now);
	csum_update(s->th + 16, tcp_was, tcp_now);
}

/* Direction d NATs, s is one of its segments (IPv4 only): the source becomes the public address and
 * the connection's public port. A SYN (without ACK) of an unknown connection makes an entry; any
 * other segment of an unknown connection is dropped, as a NAT does (no mapping to use). Returns 0 to
 * drop. */
static int nat_out(struct dir *d, const unsigned char *f, struct seg *s)
{
	if (s->v6)
		return 1;
	struct ckey k;
	seg_key(s, &k, 0);
	struct conn *c = ct_find(&d->nat_ct, 1, &k);
	if (!c) {
		if ((s->th[13] & (TH_SYN | TH_ACK)) != TH_SYN) {
			d->mb_nat_unknown++;
			return 0;
		}
		struct ckey pub = k;
		memcpy(pub.src, d->nat_addr, 4);
		pub.sport = htons(nat_port_alloc(&d->nat_ct));
		c = ct_add(&d->nat_ct, &pub, &k);
		d->mb_nat_conns++;
	}
	memcpy(d->nat_mac, f + 6, 6); /* who is behind the NAT: what ARP for the public address gets */
	d->nat_mac_known = 1;
	nat_rewrite(s, s->ip + 12, s->th, c->k[0].src, c->k[0].sport);
	d->mb_nat_rewritten++;
	return 1;
}

/* Direction o NATs, s goes the other way: a segment to the public address gets the private address
 * and port of its connection back; one that matches no connection is dropped. Segments to other
 * addresses pass. Returns -1 to drop, 1 if translated, 0 if not the NAT's. */
static int nat_in(struct dir *o, struct seg *s)
{
	if (s->v6 || memcmp(s->ip + 16, o->nat_addr, 4))
		return 0;
	struct ckey k;
	seg_key(s, &k, 1);
	struct conn *c = ct_find(&o->nat_ct, 0, &k);
	if (!c) {
		o->mb_nat_unknown++;
		return -1;
	}
	nat_rewrite(s, s->ip + 16, s->th + 2, c->k[1].src, c->k[1].sport);
	o->mb_nat_rewritten++;
	return 1;
}

/* Direction o NATs, f (len bytes, ARP at l3) came the other way: if it asks who has the public
 * address and a MAC address behind the NAT is known, the reply -- from that MAC, so that the
 * segments to the public address go where the NAT can take them -- is written to r. Returns 1 then. */
static int nat_arp(struct dir *o, const unsigned char *f, uint32_t len, uint32_t l3, unsigned char *r,
		   uint32_t *rlen)
{
	const unsigned char *a = f + l3;
	if (!o->nat_mac_known || len < l3 + 28)
		return 0;
	if (a[0] != 0 || a[1] != 1 || a[2] != 0x08 || a[3] != 0 || a[4] != 6 || a[5] != 4 || a[6] != 0 || a[7] != 1 ||
	    memcmp(a + 24, o->nat_addr, 4))
		return 0; /* not Ethernet/IPv4, not a request, not for the public address */
	memcpy(r, f, len);
	memcpy(r, f + 6, 6);          /* to the asker */
	memcpy(r + 6, o->nat_mac, 6);
	unsigned char *b = r + l3;
	b[7] = 2;                     /* reply */
	memcpy(b + 8, o->nat_mac, 6); /* sender: the public address is at the private host's MAC */
	memcpy(b + 14, o->nat_addr, 4);
	memcpy(b + 18, a + 8, 6);     /* target: the asker */
	memcpy(b + 24, a + 14, 4);
	*rlen = len;
	o->mb_nat_arp++;
	return 1;
}

/* ---------------------------------------------------------------- coalescing */

enum { CO_PASS, CO_HELD, CO_MERGED, CO_RELEASE };

/* Direction d coalesces (or still holds a segment from when it did); s, in frame f, is one of its
 * segments as the other functions left it. One segment is held at a time: a data segment (payload,
 * no SYN/FIN/RST/URG, checksums right) shorter than mb_coalesce bytes waits for the next segment of
 * its connection. If that one is contiguous, a data segment too, and the payloads together fit, it
 * is merged in (CO_MERGED); otherwise the held segment leaves first, then it (CO_RELEASE).
 * Segments of other connections pass (CO_PASS) and the held one waits on. */
static int coalesce(struct dir *d, unsigned char *f, struct seg *s)
{
	unsigned char *th = s->th;
	uint32_t plen = s->seglen - s->hl;
	int data = plen && !(th[13] & (TH_SYN | TH_FIN | TH_RST | TH_URG)) && seg_sums_ok(s);
	struct ckey k;
	seg_key(s, &k, 0);
	if (d->held_len) {
		if (memcmp(&k, &d->held_key, sizeof(k)))
			return CO_PASS;
		if (!data || get32(th + 4) != d->held_seq + d->held_plen || d->held_plen + plen > d->mb_coalesce)
			return CO_RELEASE;
		/* The first segment's headers and TCP options (its DSS mapping, which then covers only its
		 * own bytes), both payloads; the latest acknowledgment and window; PSH if either had it. */
		unsigned char *hip = d->held + d->held_l3, *hth = hip + (d->held_v6 ? 40 : 20);
		memcpy(d->held + d->held_len, th + s->hl, plen);
		d->held_len += plen;
		d->held_plen += plen;
		uint32_t seglen = d->held_hl + d->held_plen;
		if (d->held_v6) {
			hip[4] = seglen >> 8;
			hip[5] = seglen & 0xff;
		} else {
			hip[2] = (20 + seglen) >> 8;
			hip[3] = (20 + seglen) & 0xff;
			ipv4_checksum_set(hip);
		}
		memcpy(hth + 8, th + 8, 4);
		memcpy(hth + 14, th + 14, 2);
		hth[13] |= th[13] & (TH_ACK | TH_PSH);
		tcp_checksum_set(hip, d->held_v6, hth, seglen);
		d->mb_coalesced++;
		return CO_MERGED;
	}
	if (!data || plen >= d->mb_coalesce)
		return CO_PASS;
	if (!d->held && !(d->held = malloc(FRAME_MAX)))
		die("malloc");
	d->held_len = (uint32_t)(th + s->seglen - f); /* Ethernet padding left behind */
	memcpy(d->held, f, d->held_len);
	d->held_l3 = (uint32_t)(s->ip - f);
	d->held_v6 = s->v6;
	d->held_hl = s->hl;
	d->held_plen = plen;
	d->held_seq = get32(th + 4);
	d->held_key = k;
	return CO_HELD;
}

/* ---------------------------------------------------------------- the middlebox: all of it */

static int mb_on(const struct dir *d)
{
	return d->mb_strip || d->mb_drop_syn || d->mb_mss || d->mb_rewrite || d->mb_split || d->mb_isn || d->mb_nat ||
	       d->mb_coalesce || d->held_len;
}

/* Direction d's middlebox (and what the other direction's ISN randomisation and NAT undo) on one
 * frame f of len bytes, changed in place: *out says what leaves (see struct mb_out). */
static void middlebox(struct dir *d, unsigned char *f, uint32_t len, struct mb_out *out)
{
	static unsigned char second[FRAME_MAX], reply[FRAME_MAX];
	struct dir *o = &dirs[d == &dirs[0]];
	memset(out, 0, sizeof(*out));
	out->n = 1;
	out->f[0] = f;
	out->len[0] = len;
	if (!mb_on(d) && !o->mb_isn && !o->mb_nat)
		return;
	struct seg s;
	int kind = parse(f, len, &s);
	if (kind == SEG_ARP && o->mb_nat && nat_arp(o, f, len, s.l3, reply, &out->reply_len)) {
		out->n = 0; /* answered: the request goes no further */
		out->reply = reply;
		return;
	}
	if (kind == SEG_SKIP)
		d->mb_skipped++;
	if (kind != SEG_TCP)
		return;
	unsigned char *th = s.th;
	uint32_t hl = s.hl;
	int syn = th[13] & TH_SYN;
	if (d->mb_drop_syn && syn && s.n_mptcp) {
		d->mb_dropped_syn++;
		out->n = 0;
		return;
	}
	/* The other direction's translations undone in reverse order, then this one's made. */
	int back = 0;
	if (o->mb_isn)
		isn_back(o, &s);
	if (o->mb_nat && (back = nat_in(o, &s)) < 0) {
		out->n = 0;
		return;
	}
	if (d->mb_nat && !back && !nat_out(d, f, &s)) {
		out->n = 0;
		return;
	}
	if (d->mb_isn)
		isn_out(d, &s);

	uint16_t before = csum_fold(csum_add(0, th + 20, hl - 20));
	unsigned stripped = 0, clamped = 0;
	for (int k = 0; k < s.n_mptcp; k++) {
		unsigned char *opt = th + s.mptcp[k];
		int sub = opt[1] > 2 ? opt[2] >> 4 : -1;
		if ((d->mb_strip & MB_ALL) || ((d->mb_strip & MB_SYN) && syn) ||
		    ((d->mb_strip & MB_JOIN) && sub == MPTCP_MP_JOIN) ||
		    ((d->mb_strip & MB_ADD_ADDR) && sub == MPTCP_ADD_ADDR)) {
			memset(opt, OPT_NOP, opt[1]);
			stripped++;
		}
	}
	if (d->mb_mss && syn && s.mss && (uint32_t)(th[s.mss + 2] << 8 | th[s.mss + 3]) > d->mb_mss) {
		th[s.mss + 2] = d->mb_mss >> 8;
		th[s.mss + 3] = d->mb_mss & 0xff;
		clamped = 1;
	}
	if (stripped || clamped) /* m and m': the sums of the options before and after */
		csum_update(th + 16, before, csum_fold(csum_add(0, th + 20, hl - 20)));
	if (stripped) {
		d->mb_stripped_frames++;
		d->mb_stripped_options += stripped;
	}
	d->mb_mss_clamped += clamped;

	uint32_t plen = s.seglen - hl;
	int data = plen && !(th[13] & (TH_SYN | TH_RST));
	unsigned char *payload = th + hl;
	if (d->mb_rewrite_max && (th[13] & (TH_SYN | TH_ACK)) == TH_SYN) /* a new connection */
		d->mb_data_segs = d->mb_conn_rewritten = 0;
	if (data && d->mb_rewrite && ++d->mb_data_segs > d->mb_rewrite_after &&
	    (d->mb_data_segs - d->mb_rewrite_after) % d->mb_rewrite == 0 &&
	    (!d->mb_rewrite_max || d->mb_conn_rewritten < d->mb_rewrite_max)) {
		/* hl is a multiple of 4: the byte's place in its 16-bit word is that of its offset */
		uint32_t at = plen / 2, shift = at & 1 ? 0 : 8;
		uint16_t was = (uint16_t)(payload[at] << shift);
		payload[at] ^= 0xff;
		csum_update(th + 16, was, (uint16_t)(payload[at] << shift));
		d->mb_rewritten++;
		d->mb_conn_rewritten++;
	}
	if (d->mb_coalesce || d->held_len) {
		int c = coalesce(d, f, &s);
		if (c == CO_HELD || c == CO_MERGED) {
			out->held = c == CO_HELD ? 1 : 2;
			out->n = 0;
			return;
		}
		if (c == CO_RELEASE) { /* the held segment leaves first; f goes on (and may be split) */
			out->f[0] = d->held;
			out->len[0] = d->held_len;
			out->f[1] = f;
			out->len[1] = len;
			out->n = 2;
			d->held_len = 0;
		}
	}
	int last = out->n - 1;
	if (data && d->mb_split && plen > d->mb_split && !(th[13] & TH_URG) && seg_sums_ok(&s)) {
		split_segment(f, &out->len[last], second, &out->len[last + 1], s.ip, s.v6, th, hl, plen, d->mb_split);
		out->f[last + 1] = second;
		out->n++;
		d->mb_split_frames++;
	}
}

/* ---------------------------------------------------------------- the model */

static int lost(struct dir *d)
{
	if (d->ge_p > 0 || d->ge_r > 0) {
		/* Gilbert-Elliott, as netem's gemodel: transition, then loss by the state's rate. */
		if (!d->ge_bad) {
			if (urand() < d->ge_p)
				d->ge_bad = 1;
		} else if (urand() < d->ge_r) {
			d->ge_bad = 0;
		}
		double keep = d->ge_bad ? d->ge_h : d->ge_k;
		return urand() >= keep;
	}
	return d->loss > 0 && urand() < d->loss;
}

/* One frame into direction d's link model: loss, queue, serialization, delay. */
static void enqueue(struct dir *d, const unsigned char *frame, uint32_t len, uint64_t now)
{
	if (lost(d)) {
		d->drop_loss++;
		return;
	}
	uint64_t tx_end = now;
	if (d->rate > 0) {
		backlog_expire(d, now);
		if ((d->limit_pkts && d->bl_n >= d->limit_pkts) ||
		    (d->limit_bytes && d->bl_bytes + len > d->limit_bytes)) {
			d->drop_queue++;
			return;
		}
		uint64_t start = d->next_free > now ? d->next_free : now;
		tx_end = start + (uint64_t)((double)len * 8.0 * 1e9 / d->rate);
		d->next_free = tx_end;
		backlog_add(d, tx_end, len);
	}
	int64_t delay = d->delay_ns;
	if (d->jitter_ns > 0)
		delay += (int64_t)((urand() * 2.0 - 1.0) * (double)d->jitter_ns);
	if (delay < 0)
		delay = 0;
	uint64_t dep = tx_end + (uint64_t)delay;
	if (!d->reorder && dep < d->last_dep)
		dep = d->last_dep; /* jitter without reordering: never overtake the previous frame */
	d->last_dep = dep;
	struct pkt *p = malloc(sizeof(*p) + len);
	if (!p)
		die("malloc");
	p->dep = dep;
	p->seq = d->seq++;
	p->len = len;
	memcpy(p->data, frame, len);
	heap_push(d, p);
}

/* The held segment (mb_coalesce) into the link model once it has waited long enough. */
static void coalesce_expire(struct dir *d, uint64_t now)
{
	if (d->held_len && now >= d->held_at + d->mb_hold_ns) {
		enqueue(d, d->held, d->held_len, now);
		d->held_len = 0;
	}
}

static void arrive(struct dir *d, unsigned char *frame, uint32_t len, uint64_t now)
{
	struct mb_out out;
	d->rx_pkts++;
	d->rx_bytes += len;
	if (link_down) {
		d->drop_down++;
		return;
	}
	coalesce_expire(d, now);
	middlebox(d, frame, len, &out);
	if (out.held == 1)
		d->held_at = now;
	for (int i = 0; i < out.n; i++)
		enqueue(d, out.f[i], out.len[i], now);
	if (out.reply) /* back to where the frame came from: the other direction's model */
		enqueue(&dirs[d == &dirs[0]], out.reply, out.reply_len, now);
}

static void depart(struct dir *d, uint64_t now)
{
	while (d->heap_n && d->heap[0]->dep <= now) {
		struct pkt *p = heap_pop(d);
		if (send(d->tx, p->data, p->len, MSG_DONTWAIT) < 0) {
			d->tx_err++;
		} else {
			d->tx_pkts++;
			d->tx_bytes += p->len;
		}
		free(p);
	}
}

static void flush(struct dir *d)
{
	while (d->heap_n)
		free(heap_pop(d));
	d->held_len = 0;
	d->bl_n = d->bl_head = 0;
	d->bl_bytes = 0;
	d->next_free = d->last_dep = 0;
}

/* ---------------------------------------------------------------- sockets */

static int open_if(const char *ifname)
{
	int s = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
	if (s < 0)
		die("socket(AF_PACKET)");
	unsigned idx = if_nametoindex(ifname);
	if (!idx) {
		fprintf(stderr, "linkemu: no interface %s\n", ifname);
		exit(1);
	}
	struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = idx};
	if (bind(s, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		die("bind");
	int one = 1, buf = 8 << 20;
	if (setsockopt(s, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) < 0)
		die("PACKET_IGNORE_OUTGOING");
	setsockopt(s, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf));
	setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof(buf));
	return s;
}

/* ---------------------------------------------------------------- control */

/* A whole number 0..max in decimal digits, or -1. */
static int64_t count_value(const char *v, uint64_t max)
{
	uint64_t x = 0;
	if (!*v)
		return -1;
	for (; *v; v++) {
		if (*v < '0' || *v > '9' || x > (max - (uint64_t)(*v - '0')) / 10)
			return -1;
		x = x * 10 + (uint64_t)(*v - '0');
	}
	return (int64_t)x;
}

/* 0, -1 for an unknown parameter, -2 for a value it cannot take. */
static int set_param(struct dir *d, const char *k, const char *v)
{
	double x = strtod(v, NULL);
	if (!strcmp(k, "mb_rewrite") || !strcmp(k, "mb_split")) {
		int64_t n = count_value(v, !strcmp(k, "mb_split") ? 65535 : UINT32_MAX);
		if (n < 0)
			return -2;
		*(!strcmp(k, "mb_split") ? &d->mb_split : &d->mb_rewrite) = (uint32_t)n;
		return 0;
	}
	if (!strcmp(k, "mb_coalesce")) {
		int64_t n = count_value(v, 65000);
		if (n < 0)
			return -2;
		d->mb_coalesce = (uint32_t)n;
		return 0;
	}
	if (!strcmp(k, "mb_coalesce_hold_us")) {
		int64_t n = count_value(v, 1000000);
		if (n < 1)
			return -2;
		d->mb_hold_ns = (uint64_t)n * 1000;
		return 0;
	}
	if (!strcmp(k, "mb_rewrite_after") || !strcmp(k, "mb_rewrite_max")) {
		int64_t n = count_value(v, INT64_MAX);
		if (n < 0)
			return -2;
		*(!strcmp(k, "mb_rewrite_max") ? &d->mb_rewrite_max : &d->mb_rewrite_after) = (uint64_t)n;
		return 0;
	}
	if (!strcmp(k, "mb_isn")) {
		int64_t n = count_value(v, 1);
		if (n < 0)
			return -2;
		d->mb_isn = (int)n;
		return 0;
	}
	if (!strcmp(k, "mb_nat")) {
		struct in_addr a;
		if (!strcmp(v, "off")) {
			d->mb_nat = 0;
			return 0;
		}
		if (inet_pton(AF_INET, v, &a) != 1 || a.s_addr == 0)
			return -2;
		memcpy(d->nat_addr, &a, 4);
		d->mb_nat = 1;
		return 0;
	}
	if (!strcmp(k, "mb_strip")) {
		int mode = mb_parse(v);
		if (mode < 0)
			return -2;
		d->mb_strip = (unsigned)mode;
		return 0;
	}
	if (!strcmp(k, "mb_mss")) {
		if (!(x >= 0 && x <= 65535))
			return -2;
		d->mb_mss = (uint32_t)x;
		return 0;
	}
	if (!strcmp(k, "rate")) d->rate = x;
	else if (!strcmp(k, "delay_us")) d->delay_ns = (int64_t)(x * 1000);
	else if (!strcmp(k, "jitter_us")) d->jitter_ns = (int64_t)(x * 1000);
	else if (!strcmp(k, "loss")) d->loss = x;
	else if (!strcmp(k, "limit_pkts")) d->limit_pkts = (uint32_t)x;
	else if (!strcmp(k, "limit_bytes")) d->limit_bytes = (uint64_t)x;
	else if (!strcmp(k, "reorder")) d->reorder = x != 0;
	else if (!strcmp(k, "ge_p")) d->ge_p = x;
	else if (!strcmp(k, "ge_r")) d->ge_r = x;
	else if (!strcmp(k, "ge_h")) d->ge_h = x;
	else if (!strcmp(k, "ge_k")) d->ge_k = x;
	else if (!strcmp(k, "mb_drop_syn")) d->mb_drop_syn = x != 0;
	else return -1;
	return 0;
}

static void print_stats(void)
{
	printf("{");
	for (int i = 0; i < 2; i++) {
		struct dir *d = &dirs[i];
		printf("%s\"%s\":{\"rx_pkts\":%" PRIu64 ",\"rx_bytes\":%" PRIu64 ",\"tx_pkts\":%" PRIu64
		       ",\"tx_bytes\":%" PRIu64 ",\"drop_loss\":%" PRIu64 ",\"drop_queue\":%" PRIu64
		       ",\"drop_down\":%" PRIu64 ",\"tx_err\":%" PRIu64 ",\"queued\":%zu,\"max_backlog_pkts\":%" PRIu64
		       ",\"max_backlog_bytes\":%" PRIu64
		       ",\"rate\":%.0f,\"delay_us\":%.3f,\"jitter_us\":%.3f,\"loss\":%g,\"limit_pkts\":%u,\"limit_bytes\":%" PRIu64,
		       i ? "," : "", d->name, d->rx_pkts, d->rx_bytes, d->tx_pkts, d->tx_bytes, d->drop_loss,
		       d->drop_queue, d->drop_down, d->tx_err, d->heap_n, d->max_backlog_pkts, d->max_backlog_bytes, d->rate,
		       d->delay_ns / 1000.0, d->jitter_ns / 1000.0, d->loss, d->limit_pkts, d->limit_bytes);
		char mode[64];
		mb_name(d->mb_strip, mode, sizeof(mode));
		printf(",\"mb_stripped_frames\":%" PRIu64 ",\"mb_stripped_options\":%" PRIu64 ",\"mb_dropped_syn\":%" PRIu64
		       ",\"mb_mss_clamped\":%" PRIu64 ",\"mb_skipped\":%" PRIu64 ",\"mb_strip\":\"%s\",\"mb_drop_syn\":%d,\"mb_mss\":%u",
		       d->mb_stripped_frames, d->mb_stripped_options, d->mb_dropped_syn, d->mb_mss_clamped, d->mb_skipped, mode,
		       d->mb_drop_syn, d->mb_mss);
		printf(",\"mb_rewritten\":%" PRIu64 ",\"mb_split_frames\":%" PRIu64 ",\"mb_rewrite\":%u,\"mb_rewrite_after\":%" PRIu64
		       ",\"mb_split\":%u", d->mb_rewritten, d->mb_split_frames, d->mb_rewrite, d->mb_rewrite_after, d->mb_split);
		printf(",\"mb_isn_conns\":%" PRIu64 ",\"mb_isn_rewritten\":%" PRIu64 ",\"mb_isn_evicted\":%" PRIu64
		       ",\"mb_isn\":%d", d->mb_isn_conns, d->mb_isn_rewritten, d->isn_ct.evicted, d->mb_isn);
		char nat[INET_ADDRSTRLEN] = "off";
		if (d->mb_nat)
			inet_ntop(AF_INET, d->nat_addr, nat, sizeof(nat));
		printf(",\"mb_nat_conns\":%" PRIu64 ",\"mb_nat_rewritten\":%" PRIu64 ",\"mb_nat_unknown\":%" PRIu64
		       ",\"mb_nat_arp\":%" PRIu64 ",\"mb_nat_evicted\":%" PRIu64 ",\"mb_nat\":\"%s\"", d->mb_nat_conns,
		       d->mb_nat_rewritten, d->mb_nat_unknown, d->mb_nat_arp, d->nat_ct.evicted, nat);
		printf(",\"mb_coalesced\":%" PRIu64 ",\"mb_coalesce\":%u,\"mb_coalesce_hold_us\":%" PRIu64, d->mb_coalesced,
		       d->mb_coalesce, d->mb_hold_ns / 1000);
		printf(",\"mb_rewrite_max\":%" PRIu64, d->mb_rewrite_max);
		printf("}");
	}
	printf(",\"down\":%d}\n", link_down);
	fflush(stdout);
}

/* Returns 1 to quit. */
static int command(char *line)
{
	char *save, *tok = strtok_r(line, " \t\r\n", &save);
	if (!tok)
		return 0;
	if (!strcmp(tok, "quit"))
		return 1;
	if (!strcmp(tok, "stats")) { print_stats(); return 0; }
	if (!strcmp(tok, "down")) { link_down = 1; flush(&dirs[0]); flush(&dirs[1]); printf("ok\n"); fflush(stdout); return 0; }
	if (!strcmp(tok, "up")) { link_down = 0; printf("ok\n"); fflush(stdout); return 0; }
	if (!strcmp(tok, "set")) {
		char *which = strtok_r(NULL, " \t\r\n", &save);
		int lo = 0, hi = 1;
		if (which && !strcmp(which, "a2b")) hi = 0;
		else if (which && !strcmp(which, "b2a")) lo = 1;
		else if (!which || strcmp(which, "both")) { printf("error: set a2b|b2a|both k=v...\n"); fflush(stdout); return 0; }
		char *kv;
		while ((kv = strtok_r(NULL, " \t\r\n", &save))) {
			char *eq = strchr(kv, '=');
			if (!eq) { printf("error: %s is not k=v\n", kv); fflush(stdout); return 0; }
			*eq = 0;
			for (int i = lo; i <= hi; i++) {
				int r = set_param(&dirs[i], kv, eq + 1);
				if (r == -1) { printf("error: unknown parameter %s\n", kv); fflush(stdout); return 0; }
				if (r == -2) { printf("error: bad value %s=%s\n", kv, eq + 1); fflush(stdout); return 0; }
			}
		}
		printf("ok\n");
		fflush(stdout);
		return 0;
	}
	printf("error: unknown command %s\n", tok);
	fflush(stdout);
	return 0;
}

/* ---------------------------------------------------------------- test mode (--filter) */

static int unhex(const char *hex, unsigned char *out, size_t n)
{
	for (size_t i = 0; i < 2 * n; i++) {
		char c = hex[i];
		int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
		if (v < 0)
			return -1;
		out[i / 2] = (unsigned char)(i % 2 ? out[i / 2] | v : v << 4);
	}
	return 0;
}

/* The middlebox alone, on frames given as hex on stdin: see the header comment. */
static int filter_main(void)
{
	static unsigned char frame[FRAME_MAX];
	char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, stdin) > 0) {
		if (!strncmp(line, "flush ", 6)) {
			char *fsave, *which = strtok_r(line + 6, " \t\r\n", &fsave);
			struct dir *d = !which ? NULL : !strcmp(which, "a2b") ? &dirs[0] : !strcmp(which, "b2a") ? &dirs[1] : NULL;
			if (!d)
				printf("error: flush a2b|b2a\n");
			else if (!d->held_len)
				printf("none\n");
			else {
				printf("frame ");
				for (uint32_t i = 0; i < d->held_len; i++)
					printf("%02x", d->held[i]);
				printf("\n");
				d->held_len = 0;
			}
			fflush(stdout);
			continue;
		}
		if (strncmp(line, "frame ", 6)) {
			if (command(line))
				break;
			continue;
		}
		char *save, *which, *hex;
		strtok_r(line, " \t\r\n", &save);
		which = strtok_r(NULL, " \t\r\n", &save);
		hex = strtok_r(NULL, " \t\r\n", &save);
		struct dir *d = !which ? NULL : !strcmp(which, "a2b") ? &dirs[0] : !strcmp(which, "b2a") ? &dirs[1] : NULL;
		size_t n = hex ? strlen(hex) : 0;
		if (!d || !n || n % 2 || n / 2 > FRAME_MAX || unhex(hex, frame, n / 2) < 0) {
			printf("error: frame a2b|b2a <hex>\n");
		} else {
			struct mb_out out;
			middlebox(d, frame, (uint32_t)(n / 2), &out);
			if (out.reply) {
				printf("reply ");
				for (uint32_t i = 0; i < out.reply_len; i++)
					printf("%02x", out.reply[i]);
			} else if (out.held) {
				printf("held");
			} else if (!out.n)
				printf("drop");
			else if (out.n == 1)
				printf("frame ");
			else
				printf("frames %d ", out.n);
			for (int k = 0; k < out.n; k++) {
				for (uint32_t i = 0; i < out.len[k]; i++)
					printf("%02x", out.f[k][i]);
				printf("%s", k + 1 < out.n ? " " : "");
			}
			printf("\n");
		}
		fflush(stdout);
	}
	free(line);
	return 0;
}

/* Both random streams (the link model's, mb_isn's) from one seed: a run is reproducible. */
static void seed(uint64_t s)
{
	rng_state = s | 1;
	isn_rng = s;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (f) { fputs(text, f); fclose(f); }
}

int main(int argc, char **argv)
{
	dirs[0].name = "a2b";
	dirs[1].name = "b2a";
	dirs[0].nat_ct.nat = dirs[1].nat_ct.nat = 1;
	dirs[0].mb_hold_ns = dirs[1].mb_hold_ns = 1000000;
	if (argc > 1 && !strcmp(argv[1], "--filter")) {
		if (argc == 4 && !strcmp(argv[2], "--seed"))
			seed(strtoull(argv[3], NULL, 0));
		else if (argc != 2) {
			fprintf(stderr, "linkemu: --filter [--seed N]\n");
			return 2;
		}
		return filter_main();
	}
	/* Our own network namespace: the link's middle lives and dies with this process. */
	if (argc > 1 && !strcmp(argv[1], "--no-netns")) {
		argc--; argv++;
	} else if (unshare(CLONE_NEWNET) < 0) {
		die("unshare(CLONE_NEWNET)");
	}
	/* No IPv6 chatter (router solicitations, DAD) from the emulator's own ends. */
	write_file("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
	write_file("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
	const char *ifa = "a", *ifb = "b";
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed(strtoull(argv[++i], NULL, 0));
		else if (!strcmp(argv[i], "--ifa") && i + 1 < argc) ifa = argv[++i];
		else if (!strcmp(argv[i], "--ifb") && i + 1 < argc) ifb = argv[++i];
		else { fprintf(stderr, "linkemu: unknown argument %s\n", argv[i]); return 2; }
	}
	signal(SIGPIPE, SIG_IGN);
	/* Wake at the departure time, not up to 50 us later (the default timer slack). */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	printf("ready %d\n", (int)getpid());
	fflush(stdout);

	char line[1024];
	/* Configuration lines until "go": the interfaces exist after that. */
	for (;;) {
		if (!fgets(line, sizeof(line), stdin))
			return 0;
		if (!strncmp(line, "go", 2))
			break;
		if (command(line))
			return 0;
	}
	dirs[0].rx = dirs[1].tx = open_if(ifa);
	dirs[0].tx = dirs[1].rx = open_if(ifb);
	printf("running\n");
	fflush(stdout);

	int ep = epoll_create1(0), tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	if (ep < 0 || tfd < 0)
		die("epoll/timerfd");
	struct epoll_event ev = {.events = EPOLLIN};
	ev.data.u32 = 0; epoll_ctl(ep, EPOLL_CTL_ADD, dirs[0].rx, &ev);
	ev.data.u32 = 1; epoll_ctl(ep, EPOLL_CTL_ADD, dirs[1].rx, &ev);
	ev.data.u32 = 2; epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
	ev.data.u32 = 3; epoll_ctl(ep, EPOLL_CTL_ADD, STDIN_FILENO, &ev);
	fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);

	static unsigned char bufs[BATCH][FRAME_MAX];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	char cmdbuf[4096];
	size_t cmdlen = 0;
	uint64_t armed = 0;
	for (;;) {
		struct epoll_event evs[8];
		int n = epoll_wait(ep, evs, 8, -1);
		if (n < 0 && errno != EINTR)
			die("epoll_wait");
		for (int e = 0; e < n; e++) {
			uint32_t which = evs[e].data.u32;
			if (which < 2) {
				struct dir *d = &dirs[which];
				for (;;) {
					for (int i = 0; i < BATCH; i++) {
						iov[i] = (struct iovec){bufs[i], FRAME_MAX};
						memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
						msgs[i].msg_hdr.msg_iov = &iov[i];
						msgs[i].msg_hdr.msg_iovlen = 1;
					}
					int got = recvmmsg(d->rx, msgs, BATCH, MSG_DONTWAIT, NULL);
					if (got <= 0)
						break;
					uint64_t t = now_ns();
					for (int i = 0; i < got; i++)
						arrive(d, bufs[i], msgs[i].msg_len, t);
					depart(d, now_ns());
					if (got < BATCH)
						break;
				}
			} else if (which == 2) {
				uint64_t exp;
				if (read(tfd, &exp, sizeof(exp)) < 0 && errno != EAGAIN)
					die("timerfd read");
				armed = 0;
			} else {
				ssize_t r = read(STDIN_FILENO, cmdbuf + cmdlen, sizeof(cmdbuf) - 1 - cmdlen);
				if (r == 0)
					return 0; /* our owner is gone */
				if (r > 0) {
					cmdlen += r;
					cmdbuf[cmdlen] = 0;
					char *nl;
					while ((nl = strchr(cmdbuf, '\n'))) {
						*nl = 0;
						if (command(cmdbuf))
							return 0;
						memmove(cmdbuf, nl + 1, cmdlen - (nl + 1 - cmdbuf) + 1);
						cmdlen -= nl + 1 - cmdbuf;
					}
					if (cmdlen >= sizeof(cmdbuf) - 1)
						cmdlen = 0;
				}
			}
		}
		uint64_t t = now_ns();
		coalesce_expire(&dirs[0], t);
		coalesce_expire(&dirs[1], t);
		depart(&dirs[0], t);
		depart(&dirs[1], t);
		/* Arm the timer for the next departure, or the end of a hold. */
		uint64_t next = 0;
		for (int i = 0; i < 2; i++) {
			if (dirs[i].heap_n && (!next || dirs[i].heap[0]->dep < next))
				next = dirs[i].heap[0]->dep;
			uint64_t release = dirs[i].held_at + dirs[i].mb_hold_ns;
			if (dirs[i].held_len && (!next || release < next))
				next = release;
		}
		if (next && next != armed) {
			struct itimerspec its = {0};
			its.it_value.tv_sec = next / 1000000000ull;
			its.it_value.tv_nsec = next % 1000000000ull;
			timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
			armed = next;
		}
	}
}
