/* Trial programs for `stella probes doctor`: one tiny program per attach type. The doctor loads
 * each alone and attaches it to a harmless target; what the kernel answers (loaded, or the errno
 * of the load or the attach) is the evidence that the type is available here. Each reads its
 * BPF cookie, as the real programs do, so a kernel without cookies for that type says so. */
#include "stella_vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/* Written so the verifier cannot drop the cookie call as dead code. */
__u64 stella_trial_sink;

#define STELLA_TRIAL(section, name)                                                             \
	SEC(section) int name(void *ctx)                                                        \
	{                                                                                       \
		stella_trial_sink = bpf_get_attach_cookie(ctx);                                 \
		return 0;                                                                       \
	}

STELLA_TRIAL("uprobe", stella_trial_uprobe)
STELLA_TRIAL("uretprobe", stella_trial_uretprobe)
STELLA_TRIAL("usdt", stella_trial_usdt)
STELLA_TRIAL("kprobe/tcp_connect", stella_trial_kprobe)
STELLA_TRIAL("kretprobe/tcp_connect", stella_trial_kretprobe)
STELLA_TRIAL("tracepoint/sched/sched_process_exec", stella_trial_tracepoint)
STELLA_TRIAL("raw_tracepoint/sched_process_exec", stella_trial_raw_tracepoint)
STELLA_TRIAL("tp_btf/sched_process_exec", stella_trial_tp_btf)
STELLA_TRIAL("fentry/tcp_connect", stella_trial_fentry)
STELLA_TRIAL("fexit/tcp_connect", stella_trial_fexit)
