/* Container lifecycle from the kernel: a cgroup created or removed anywhere on the host.
 * The collector looks at the cgroup tree at once (a container of the map's scope joins or
 * leaves the kernel's scope map) instead of waiting for its next periodic look. Never
 * filtered by scope or pid: the new cgroup is what the filters are about.
 *   tp_btf/cgroup_mkdir, tp_btf/cgroup_rmdir        (struct cgroup *, const char *path)
 *   raw_tracepoint/cgroup_mkdir, .../cgroup_rmdir   (the same arguments, untyped)
 */
#include "stella_common.h"

/* The cookie of lifecycle events: no function-map node has it. */
#define STELLA_CGROUP_COOKIE 0xffffffff

static __always_inline void stella_cgroup_event(struct cgroup *cgrp, __u32 removed)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct stella_event *e = stella_reserve(STELLA_CGROUP_COOKIE, STELLA_KIND_CGROUP,
						pid_tgid >> 32, (__u32)pid_tgid,
						BPF_CORE_READ(cgrp, kn, id));
	if (!e)
		return;
	e->aux = removed;
	bpf_ringbuf_submit(e, 0);
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(stella_btf_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	stella_cgroup_event(cgrp, 0);
	return 0;
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(stella_btf_cgroup_rmdir, struct cgroup *cgrp, const char *path)
{
	stella_cgroup_event(cgrp, 1);
	return 0;
}

SEC("raw_tracepoint/cgroup_mkdir")
int stella_raw_cgroup_mkdir(struct bpf_raw_tracepoint_args *ctx)
{
	stella_cgroup_event((struct cgroup *)ctx->args[0], 0);
	return 0;
}

SEC("raw_tracepoint/cgroup_rmdir")
int stella_raw_cgroup_rmdir(struct bpf_raw_tracepoint_args *ctx)
{
	stella_cgroup_event((struct cgroup *)ctx->args[0], 1);
	return 0;
}
