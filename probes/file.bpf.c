/* File opens: tracepoint syscalls:sys_enter_openat, or a kprobe on do_sys_openat2 where the
 * kernel has kprobes (the collector picks one; fallback order kprobe -> tracepoint). */
#include "stella_common.h"

static __always_inline void stella_open(void *ctx, const char *filename, __u32 flags)
{
	__u32 node = (__u32)bpf_get_attach_cookie(ctx);
	struct stella_event *e = stella_source_hit(node, STELLA_KIND_FILE);
	if (!e)
		return;
	e->aux = flags;
	bpf_probe_read_user_str(e->path, sizeof(e->path), filename);
	bpf_ringbuf_submit(e, 0);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int stella_tp_openat(struct trace_event_raw_sys_enter *ctx)
{
	stella_open(ctx, (const char *)BPF_CORE_READ(ctx, args[1]), (__u32)BPF_CORE_READ(ctx, args[2]));
	return 0;
}

SEC("kprobe/do_sys_openat2")
int BPF_KPROBE(stella_kp_openat, int dfd, const char *filename)
{
	stella_open(ctx, filename, 0);
	return 0;
}
