/* One generic uprobe program, attached once per function-map node; the BPF cookie given at
 * attach time is the node's index in the collector's node table. */
#include "stella_common.h"

SEC("uprobe")
int stella_uprobe_node(struct pt_regs *ctx)
{
	__u32 node = (__u32)bpf_get_attach_cookie(ctx);
	struct stella_event *e = stella_function_hit(node, STELLA_KIND_FUNCTION);
	if (e)
		bpf_ringbuf_submit(e, 0);
	return 0;
}

/* The same, attached as a return probe: fires when the function returns (a node with
 * probe_types ["uretprobe"], e.g. to prove a function completed). */
SEC("uretprobe")
int stella_uretprobe_node(struct pt_regs *ctx)
{
	__u32 node = (__u32)bpf_get_attach_cookie(ctx);
	struct stella_event *e = stella_function_hit(node, STELLA_KIND_FUNCTION);
	if (e)
		bpf_ringbuf_submit(e, 0);
	return 0;
}
