/* Maps and helpers shared by every probe object: mode logic, filters, counters, ring buffer. */
#ifndef STELLA_COMMON_H
#define STELLA_COMMON_H

#include "stella_vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "stella_event.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); /* resized by the loader before load */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stella_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STELLA_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Every hit of every node, before any filter: shows how often a probe actually fired. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STELLA_MAX_NODES);
	__type(key, __u32);
	__type(value, __u64);
} node_hits SEC(".maps");

/* Coverage mode: the first hit of a node per cgroup in the current window. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct stella_node_key);
	__type(value, __u64);
} first_seen SEC(".maps");

/* Count mode: monotonically increasing per-CPU counters per (node, pid, cgroup); the collector
 * sums the CPUs, writes deltas and never deletes, so no increment can be lost to a concurrent
 * delete. Per-CPU slots keep the hot path off a shared cache line. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct stella_node_key);
	__type(value, struct stella_count);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} filter_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} filter_cgroups SEC(".maps");

/* The function map's workload (its scope): cgroups whose whole subtree is in scope, and
 * executables by (inode, device). Filled before any probe is attached. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u8);
} scope_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct stella_exe_key);
	__type(value, __u8);
} scope_exes SEC(".maps");

static __always_inline void stella_stat(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&stats, &index);
	if (value)
		*value += 1;
}

static __always_inline void stella_node_hit(__u32 node)
{
	__u64 *value = bpf_map_lookup_elem(&node_hits, &node);
	if (value)
		*value += 1;
}

static __always_inline struct stella_config *stella_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config, &zero);
}

/* 1 when the current task's cgroup, or an ancestor of it, is in scope: a unit's or a
 * container's processes may live in sub-cgroups created after the filter was set. */
static __always_inline int stella_cgroup_in_scope(void)
{
#pragma unroll
	for (int level = 0; level < STELLA_CGROUP_LEVELS; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			return 0; /* past the task's own cgroup */
		if (bpf_map_lookup_elem(&scope_cgroups, &id))
			return 1;
	}
	return 0;
}

/* 1 when the current task runs an executable in scope (checked at every hit: exec changes
 * it, and a pid may be reused by another program). */
static __always_inline int stella_exe_in_scope(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct inode *inode = BPF_CORE_READ(task, mm, exe_file, f_inode);
	if (!inode)
		return 0; /* kernel threads have no mm */
	struct stella_exe_key key = {};
	key.ino = BPF_CORE_READ(inode, i_ino);
	key.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	return bpf_map_lookup_elem(&scope_exes, &key) != 0;
}

/* 1 when the current task belongs to the function map's workload (no scope: everyone). */
static __always_inline int stella_in_scope(struct stella_config *cfg)
{
	if ((cfg->scope & STELLA_SCOPE_CGROUP) && !stella_cgroup_in_scope())
		return 0;
	if ((cfg->scope & STELLA_SCOPE_EXE) && !stella_exe_in_scope())
		return 0;
	return 1;
}

/* 1 when the current task passes the scope and the pid/cgroup filter; what fails either is
 * counted as filtered out (the seals' loss.filtered_out). */
static __always_inline int stella_allowed(struct stella_config *cfg, __u32 pid, __u64 cgroup_id)
{
	if (cfg->scope && !stella_in_scope(cfg)) {
		stella_stat(STELLA_STAT_FILTERED_OUT);
		return 0;
	}
	if (!cfg->filter_enabled)
		return 1;
	if (bpf_map_lookup_elem(&filter_pids, &pid))
		return 1;
	if (bpf_map_lookup_elem(&filter_cgroups, &cgroup_id))
		return 1;
	stella_stat(STELLA_STAT_FILTERED_OUT);
	return 0;
}

static __always_inline int stella_sampled(struct stella_config *cfg)
{
	if (cfg->sample_ppm >= 1000000)
		return 1;
	if (bpf_get_prandom_u32() % 1000000 < cfg->sample_ppm)
		return 1;
	stella_stat(STELLA_STAT_SAMPLED_OUT);
	return 0;
}

static __always_inline void stella_count(struct stella_node_key *key)
{
	struct stella_count *value = bpf_map_lookup_elem(&counts, key);
	if (!value) {
		struct stella_count init = {};
		bpf_get_current_comm(&init.comm, sizeof(init.comm));
		/* EEXIST means another CPU inserted it first: fine, look it up again. */
		bpf_map_update_elem(&counts, key, &init, BPF_NOEXIST);
		value = bpf_map_lookup_elem(&counts, key);
		if (!value) {
			stella_stat(STELLA_STAT_COUNTER_FULL);
			return;
		}
	}
	__sync_fetch_and_add(&value->count, 1);
}

/* Reserve `size` bytes (a struct stella_event, or a larger record starting with one, such as
 * the audit event of usdt.bpf.c) and fill the common header. */
#define stella_reserve(node, kind, pid, tid, cgroup_id)                                        \
	stella_reserve_sized(sizeof(struct stella_event), node, kind, pid, tid, cgroup_id)

static __always_inline struct stella_event *stella_reserve_sized(__u64 size, __u32 node,
								 __u32 kind, __u32 pid, __u32 tid,
								 __u64 cgroup_id)
{
	struct stella_event *e = bpf_ringbuf_reserve(&events, size, 0);
	if (!e) {
		stella_stat(STELLA_STAT_RINGBUF_DROPPED);
		return 0;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->cookie = node;
	e->cgroup_id = cgroup_id;
	e->pid = pid;
	e->tid = tid;
	e->kind = kind;
	e->aux = 0;
	e->aux2 = 0;
	e->family = 0;
	e->sport = 0;
	e->dport = 0;
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	e->path[0] = 0;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	return e;
}

/* A function node was hit (uprobe with a cookie): apply the collection mode in the kernel.
 * Returns an event to fill and submit, or 0 when nothing is to be sent. */
static __always_inline struct stella_event *stella_function_hit(__u32 node, __u32 kind)
{
	struct stella_config *cfg = stella_config();
	if (!cfg)
		return 0;
	/* Count mode counts every hit in `counts` already; the others keep a per-node total. */
	if (cfg->mode != STELLA_MODE_COUNT)
		stella_node_hit(node);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 pid = pid_tgid >> 32;
	__u64 cgroup_id = bpf_get_current_cgroup_id();
	if (!stella_allowed(cfg, pid, cgroup_id))
		return 0;
	struct stella_node_key key = {.node = node, .pid = 0, .cgroup_id = cgroup_id};
	if (cfg->mode == STELLA_MODE_COVERAGE) {
		__u64 now = bpf_ktime_get_ns();
		if (bpf_map_update_elem(&first_seen, &key, &now, BPF_NOEXIST) != 0)
			return 0;
	} else if (cfg->mode == STELLA_MODE_COUNT) {
		key.pid = pid;
		stella_count(&key);
		return 0;
	} else if (!stella_sampled(cfg)) {
		return 0;
	}
	return stella_reserve(node, kind, pid, (__u32)pid_tgid, cgroup_id);
}

/* An event source fired (file, exec, net): always sent, subject to filters and, in trace mode,
 * sampling; the collector aggregates per mode because the details (path, address) matter. */
#define stella_source_hit(node, kind) stella_source_hit_sized(node, kind, sizeof(struct stella_event))

static __always_inline struct stella_event *stella_source_hit_sized(__u32 node, __u32 kind,
								    __u64 size)
{
	struct stella_config *cfg = stella_config();
	if (!cfg)
		return 0;
	stella_node_hit(node);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 pid = pid_tgid >> 32;
	__u64 cgroup_id = bpf_get_current_cgroup_id();
	if (!stella_allowed(cfg, pid, cgroup_id))
		return 0;
	if (cfg->mode == STELLA_MODE_TRACE && !stella_sampled(cfg))
		return 0;
	return stella_reserve_sized(size, node, kind, pid, (__u32)pid_tgid, cgroup_id);
}

#endif /* STELLA_COMMON_H */
