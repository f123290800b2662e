/* File opens. One program per attach type of the file category's fallback order (the collector
 * loads the first that the doctor's trial load accepted here):
 *   fentry/do_sys_openat2                  (BPF trampoline, typed arguments)
 *   kprobe/do_sys_openat2                  (kernels with kprobes)
 *   tp_btf/sys_enter, raw_tracepoint/sys_enter  (openat only: the syscall number is checked first)
 *   tracepoint/syscalls/sys_enter_openat   (classic, every kernel with tracefs)
 */
#include "stella_common.h"

#define STELLA_NR_OPENAT 257 /* x86_64 */

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

SEC("fentry/do_sys_openat2")
int BPF_PROG(stella_fe_openat, int dfd, const char *filename, struct open_how *how)
{
	stella_open(ctx, filename, (__u32)BPF_CORE_READ(how, flags));
	return 0;
}

/* sys_enter(struct pt_regs *regs, long id): the user's registers; openat(dfd, filename, flags). */
static __always_inline void stella_sys_enter_open(void *ctx, struct pt_regs *regs, long id)
{
	if (id != STELLA_NR_OPENAT)
		return;
	stella_open(ctx, (const char *)BPF_CORE_READ(regs, si), (__u32)BPF_CORE_READ(regs, dx));
}

SEC("tp_btf/sys_enter")
int BPF_PROG(stella_btf_openat, struct pt_regs *regs, long id)
{
	stella_sys_enter_open(ctx, regs, id);
	return 0;
}

SEC("raw_tracepoint/sys_enter")
int stella_raw_openat(struct bpf_raw_tracepoint_args *ctx)
{
	stella_sys_enter_open(ctx, (struct pt_regs *)ctx->args[0], (long)ctx->args[1]);
	return 0;
}

/* security_file_open(struct file *): reachable only through a trampoline or a kprobe; on a
 * kernel with neither the collector says so when the function map is loaded. */
SEC("fentry/security_file_open")
int BPF_PROG(stella_fe_file_open, void *file)
{
	stella_open(ctx, 0, 0);
	return 0;
}

SEC("kprobe/security_file_open")
int BPF_KPROBE(stella_kp_file_open, void *file)
{
	stella_open(ctx, 0, 0);
	return 0;
}
