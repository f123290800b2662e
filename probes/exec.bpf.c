/* Program executions: tracepoint sched:sched_process_exec (stable on every kernel we support). */
#include "stella_common.h"

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
