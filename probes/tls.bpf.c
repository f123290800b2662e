/* OpenSSL: uprobes on SSL_read, SSL_write (with the requested byte count) and
 * SSL_do_handshake in libssl; the collection mode applies in the kernel as for function nodes. */
#include "stella_common.h"

static __always_inline void stella_tls(void *ctx, __u32 num)
{
	__u32 node = (__u32)bpf_get_attach_cookie(ctx);
	struct stella_event *e = stella_function_hit(node, STELLA_KIND_TLS);
	if (!e)
		return;
	e->aux = num;
	bpf_ringbuf_submit(e, 0);
}

SEC("uprobe")
int BPF_KPROBE(stella_ssl_read, void *ssl, void *buf, int num)
{
	stella_tls(ctx, (__u32)num);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(stella_ssl_write, void *ssl, const void *buf, int num)
{
	stella_tls(ctx, (__u32)num);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(stella_ssl_do_handshake, void *ssl)
{
	stella_tls(ctx, 0);
	return 0;
}
