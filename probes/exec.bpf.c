/* Program executions, one program per attach type of the exec category's fallback order:
 *   fentry/security_bprm_check                          (BPF trampoline)
 *   tp_btf/sched_process_exec, raw_tracepoint/sched_process_exec  (bprm->filename)
 *   tracepoint/sched/sched_process_exec                 (classic)
 */
#include "stella_common.h"

static __always_inline void stella_exec_bprm(void *ctx, struct linux_binprm *bprm)
{
	__u32 node = (__u32)bpf_get_attach_cookie(ctx);
	struct stella_event *e = stella_source_hit(node, STELLA_KIND_EXEC);
	if (!e)
		return;
	bpf_probe_read_kernel_str(e->path, sizeof(e->path), BPF_CORE_READ(bprm, filename));
	bpf_ringbuf_submit(e, 0);
}

SEC("tracepoint/sched/sched_process_exec")
int stella_tp_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	__u32 node = (__u32)bpf_get_attach_cookie(ctx);
	struct stella_event *e = stella_source_hit(node, STELLA_KIND_EXEC);
	if (!e)
		return 0;
	__u32 loc = BPF_CORE_READ(ctx, __data_loc_filename);
	bpf_probe_read_kernel_str(e->path, sizeof(e->path), (void *)ctx + (loc & 0xFFFF));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm) */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(stella_btf_exec, void *task, int old_pid, struct linux_binprm *bprm)
{
	stella_exec_bprm(ctx, bprm);
	return 0;
}

SEC("raw_tracepoint/sched_process_exec")
int stella_raw_exec(struct bpf_raw_tracepoint_args *ctx)
{
	stella_exec_bprm(ctx, (struct linux_binprm *)ctx->args[2]);
	return 0;
}

SEC("fentry/security_bprm_check")
int BPF_PROG(stella_fe_exec, struct linux_binprm *bprm)
{
	stella_exec_bprm(ctx, bprm);
	return 0;
}
