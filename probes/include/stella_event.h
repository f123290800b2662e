/* The event record shared by every probe and the Python decoder
 * (stella_bundle/collector/events.py mirrors this layout; a test checks the size).
 */
#ifndef STELLA_EVENT_H
#define STELLA_EVENT_H

#define STELLA_COMM_LEN 16
#define STELLA_PATH_LEN 256
#define STELLA_MAX_NODES 4096

/* Collection modes (config.mode). */
#define STELLA_MODE_COVERAGE 0
#define STELLA_MODE_COUNT 1
#define STELLA_MODE_TRACE 2

/* Event kinds. */
#define STELLA_KIND_FUNCTION 0
#define STELLA_KIND_FILE 1
#define STELLA_KIND_EXEC 2
#define STELLA_KIND_NET 3
#define STELLA_KIND_TLS 4
#define STELLA_KIND_CGROUP 5 /* a cgroup created (aux 0) or removed (aux 1): no record */

/* Indices of the per-CPU stats array. */
#define STELLA_STAT_RINGBUF_DROPPED 0
#define STELLA_STAT_SAMPLED_OUT 1
#define STELLA_STAT_FILTERED_OUT 2
#define STELLA_STAT_COUNTER_FULL 3
#define STELLA_STAT_HITS 4
#define STELLA_STAT_MAX 8

/* Scope selectors checked in the kernel (config.scope, a bit set; all set bits must match). */
#define STELLA_SCOPE_CGROUP 1 /* the task's cgroup or one of its ancestors is in scope_cgroups */
#define STELLA_SCOPE_EXE 2    /* the task's executable (device, inode) is in scope_exes */
/* cgroup levels searched for an ancestor in scope (the root is level 0). */
#define STELLA_CGROUP_LEVELS 16

struct stella_config {
	__u32 mode;
	__u32 sample_ppm;     /* trace mode: keep this many events per million */
	__u32 filter_enabled; /* 1: only pids in filter_pids or cgroups in filter_cgroups */
	__u32 scope;          /* STELLA_SCOPE_* bits: the function map's workload */
};

/* An executable as the kernel names it: inode number and the kernel's dev_t
 * (major << 20 | minor) of its superblock. */
struct stella_exe_key {
	__u64 ino;
	__u32 dev;
	__u32 pad;
};

struct stella_event {
	__u64 ts_ns; /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 cookie; /* node index given at attach time */
	__u64 cgroup_id;
	__u32 pid; /* thread group id */
	__u32 tid;
	__u32 kind;
	__u32 aux; /* kind-specific: open flags, tcp new state, SSL byte count */
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u16 aux2; /* kind-specific: tcp old state */
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[STELLA_COMM_LEN];
	char path[STELLA_PATH_LEN];
};

struct stella_node_key {
	__u32 node;
	__u32 pid;
	__u64 cgroup_id;
};

struct stella_count {
	__u64 count;
	char comm[STELLA_COMM_LEN];
};

#endif /* STELLA_EVENT_H */
