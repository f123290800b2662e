/* Network: outgoing TCP connections and TCP state changes, one program per attach type of the
 * net category's fallback order:
 *   fentry/tcp_connect                       (BPF trampoline: the socket's peer address)
 *   kprobe/tcp_connect                       (kernels with kprobes)
 *   tp_btf/sys_enter, raw_tracepoint/sys_enter  (connect(2) on IPv4/IPv6 sockets: peer address)
 *   tracepoint/sock/inet_sock_set_state      (classic: every TCP state change)
 * plus inet_csk_accept (trampoline or kprobe only) and libc connect/accept uprobes. */
#include "stella_common.h"

#define STELLA_AF_INET 2
#define STELLA_AF_INET6 10
#define STELLA_NR_CONNECT 42 /* x86_64 */

SEC("tracepoint/sock/inet_sock_set_state")
int stella_tp_inet_sock_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (BPF_CORE_READ(ctx, protocol) != 6 /* IPPROTO_TCP */)
		return 0;
	__u32 node = (__u32)bpf_get_attach_cookie(ctx);
	struct stella_event *e = stella_source_hit(node, STELLA_KIND_NET);
	if (!e)
		return 0;
	e->family = BPF_CORE_READ(ctx, family);
	e->sport = BPF_CORE_READ(ctx, sport);
	e->dport = BPF_CORE_READ(ctx, dport);
	e->aux = (__u32)BPF_CORE_READ(ctx, newstate);
	e->aux2 = (__u16)BPF_CORE_READ(ctx, oldstate);
	if (e->family == STELLA_AF_INET) {
		bpf_core_read(e->saddr, 4, &ctx->saddr);
		bpf_core_read(e->daddr, 4, &ctx->daddr);
	} else {
		bpf_core_read(e->saddr, 16, &ctx->saddr_v6);
		bpf_core_read(e->daddr, 16, &ctx->daddr_v6);
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("kprobe/tcp_connect")
int BPF_KPROBE(stella_kp_tcp_connect, void *sk)
{
	__u32 node = (__u32)bpf_get_attach_cookie(ctx);
	struct stella_event *e = stella_source_hit(node, STELLA_KIND_NET);
	if (e)
		bpf_ringbuf_submit(e, 0);
	return 0;
}

static __always_inline void stella_sockaddr(struct stella_event *e, const struct sockaddr *addr)
{
	unsigned short family = 0;
	bpf_probe_read_user(&family, sizeof(family), &addr->sa_family);
	e->family = family;
	if (family == STELLA_AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
		bpf_probe_read_user(&e->dport, sizeof(e->dport), &in->sin_port);
		bpf_probe_read_user(e->daddr, 4, &in->sin_addr);
		e->dport = __builtin_bswap16(e->dport);
	} else if (family == STELLA_AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
		bpf_probe_read_user(&e->dport, sizeof(e->dport), &in6->sin6_port);
		bpf_probe_read_user(e->daddr, 16, &in6->sin6_addr);
		e->dport = __builtin_bswap16(e->dport);
	}
}

SEC("uprobe")
int BPF_KPROBE(stella_libc_connect, int fd, const struct sockaddr *addr)
{
	__u32 node = (__u32)bpf_get_attach_cookie(ctx);
	struct stella_event *e = stella_source_hit(node, STELLA_KIND_NET);
	if (!e)
		return 0;
	e->aux = (__u32)fd;
	if (addr)
		stella_sockaddr(e, addr);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(stella_libc_accept, int fd)
{
	__u32 node = (__u32)bpf_get_attach_cookie(ctx);
	struct stella_event *e = stella_source_hit(node, STELLA_KIND_NET);
	if (!e)
		return 0;
	e->aux = (__u32)fd;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("fentry/tcp_connect")
int BPF_PROG(stella_fe_tcp_connect, struct sock *sk)
{
	__u32 node = (__u32)bpf_get_attach_cookie(ctx);
	struct stella_event *e = stella_source_hit(node, STELLA_KIND_NET);
	if (!e)
		return 0;
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (e->family == STELLA_AF_INET) {
		BPF_CORE_READ_INTO(e->daddr, sk, __sk_common.skc_daddr);
		BPF_CORE_READ_INTO(e->saddr, sk, __sk_common.skc_rcv_saddr);
	} else {
		BPF_CORE_READ_INTO(e->daddr, sk, __sk_common.skc_v6_daddr);
		BPF_CORE_READ_INTO(e->saddr, sk, __sk_common.skc_v6_rcv_saddr);
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* sys_enter(struct pt_regs *regs, long id): connect(fd, addr, addrlen) on IPv4/IPv6 only. */
static __always_inline void stella_sys_enter_connect(void *ctx, struct pt_regs *regs, long id)
{
	if (id != STELLA_NR_CONNECT)
		return;
	const struct sockaddr *addr = (const struct sockaddr *)BPF_CORE_READ(regs, si);
	unsigned short family = 0;
	if (!addr || bpf_probe_read_user(&family, sizeof(family), &addr->sa_family))
		return;
	if (family != STELLA_AF_INET && family != STELLA_AF_INET6)
		return;
	__u32 node = (__u32)bpf_get_attach_cookie(ctx);
	struct stella_event *e = stella_source_hit(node, STELLA_KIND_NET);
	if (!e)
		return;
	e->aux = (__u32)BPF_CORE_READ(regs, di);
	stella_sockaddr(e, addr);
	bpf_ringbuf_submit(e, 0);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(stella_btf_connect, struct pt_regs *regs, long id)
{
	stella_sys_enter_connect(ctx, regs, id);
	return 0;
}

SEC("raw_tracepoint/sys_enter")
int stella_raw_connect(struct bpf_raw_tracepoint_args *ctx)
{
	stella_sys_enter_connect(ctx, (struct pt_regs *)ctx->args[0], (long)ctx->args[1]);
	return 0;
}

SEC("fentry/inet_csk_accept")
int BPF_PROG(stella_fe_accept, struct sock *sk)
{
	__u32 node = (__u32)bpf_get_attach_cookie(ctx);
	struct stella_event *e = stella_source_hit(node, STELLA_KIND_NET);
	if (e)
		bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("kprobe/inet_csk_accept")
int BPF_KPROBE(stella_kp_accept, void *sk)
{
	__u32 node = (__u32)bpf_get_attach_cookie(ctx);
	struct stella_event *e = stella_source_hit(node, STELLA_KIND_NET);
	if (e)
		bpf_ringbuf_submit(e, 0);
	return 0;
}
