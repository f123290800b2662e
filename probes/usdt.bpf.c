/* USDT probes: a uprobe at the probe's NOP, attached with its semaphore (ref_ctr_offset) so
 * is-enabled probes fire only while attached.
 *
 * stella_usdt_node: any USDT probe a function-map node names (`provider:name`); the collection
 * mode applies in the kernel as for function nodes.
 *
 * stella_python_audit: CPython's python:audit(const char *event, PyObject *args). The event name
 * is looked up in audit_names (the audit events the function map names, with their node):
 * other events cost a string read and a hash lookup, and are not sent. For a named event the
 * first three items of the argument tuple are copied as small snapshots (type name, 24 header
 * bytes, the characters of a str), and the first two items of argument 1 when it is a tuple
 * (socket addresses); the collector decodes them per CPython version and keeps only the safe
 * arguments of each event (collector/usdt.py). Arguments are located per the note's argument
 * spec (usdt_specs, keyed by the link's cookie). */
#include "stella_common.h"

#define STELLA_AUDIT_NAME_LEN 64
#define STELLA_PY_TEXT_LEN 128
#define STELLA_PY_OBJS 5

#define STELLA_USDT_ARG_CONST 0
#define STELLA_USDT_ARG_REG 1
#define STELLA_USDT_ARG_REG_DEREF 2

struct stella_usdt_arg {
	__s64 value;   /* the constant, or the displacement of a memory operand */
	__u32 reg_off; /* offset of the register in struct pt_regs */
	__u32 kind;
};

struct stella_usdt_spec {
	struct stella_usdt_arg args[2];
	__u32 py_str_data; /* offset of a compact ASCII str's characters (48 in 3.11, 40 in 3.12) */
	__u32 reserved;
};

struct stella_audit_target {
	__u32 node;
	__u32 kind;
};

struct stella_pyobj {
	char type[16];
	__u8 head[24];
	char text[STELLA_PY_TEXT_LEN];
};

struct stella_audit_event {
	struct stella_event base;
	char name[STELLA_AUDIT_NAME_LEN];
	__s64 count; /* the argument tuple's length */
	struct stella_pyobj obj[STELLA_PY_OBJS];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STELLA_MAX_NODES);
	__type(key, __u32);
	__type(value, struct stella_usdt_spec);
} usdt_specs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STELLA_MAX_NODES);
	__type(key, char[STELLA_AUDIT_NAME_LEN]);
	__type(value, struct stella_audit_target);
} audit_names SEC(".maps");

SEC("usdt")
int stella_usdt_node(struct pt_regs *ctx)
{
	__u32 node = (__u32)bpf_get_attach_cookie(ctx);
	struct stella_event *e = stella_function_hit(node, STELLA_KIND_FUNCTION);
	if (e)
		bpf_ringbuf_submit(e, 0);
	return 0;
}

static __always_inline __u64 stella_usdt_arg(struct pt_regs *ctx, struct stella_usdt_arg *arg)
{
	__u64 value = 0;
	if (arg->kind == STELLA_USDT_ARG_CONST)
		return (__u64)arg->value;
	bpf_probe_read_kernel(&value, sizeof(value), (void *)ctx + (arg->reg_off & 0xff));
	if (arg->kind == STELLA_USDT_ARG_REG_DEREF) {
		__u64 pointed = 0;
		bpf_probe_read_user(&pointed, sizeof(pointed), (void *)(value + arg->value));
		value = pointed;
	}
	return value;
}

static __always_inline int stella_is_type(const char *type, char a, char b, char c, char d)
{
	return type[0] == a && type[1] == b && type[2] == c && type[3] == d;
}

static __always_inline void stella_py_obj(struct stella_pyobj *o, __u64 obj, __u32 str_data)
{
	__u64 type = 0, name = 0;
	if (!obj)
		return;
	bpf_probe_read_user(&type, sizeof(type), (void *)(obj + 8));     /* ob_type */
	if (type)
		bpf_probe_read_user(&name, sizeof(name), (void *)(type + 24)); /* tp_name */
	if (name)
		bpf_probe_read_user_str(o->type, sizeof(o->type), (void *)name);
	bpf_probe_read_user(o->head, sizeof(o->head), (void *)(obj + 16));
	if (stella_is_type(o->type, 's', 't', 'r', 0))
		bpf_probe_read_user_str(o->text, sizeof(o->text), (void *)(obj + (str_data & 0xff)));
}

SEC("usdt")
int stella_python_audit(struct pt_regs *ctx)
{
	__u32 cookie = (__u32)bpf_get_attach_cookie(ctx);
	struct stella_usdt_spec *spec = bpf_map_lookup_elem(&usdt_specs, &cookie);
	if (!spec)
		return 0;
	char name[STELLA_AUDIT_NAME_LEN] = {};
	__u64 name_ptr = stella_usdt_arg(ctx, &spec->args[0]);
	if (bpf_probe_read_user_str(name, sizeof(name), (void *)name_ptr) <= 0)
		return 0;
	struct stella_audit_target *target = bpf_map_lookup_elem(&audit_names, name);
	if (!target)
		return 0;
	struct stella_audit_event *e = (struct stella_audit_event *)stella_source_hit_sized(
		target->node, target->kind, sizeof(struct stella_audit_event));
	if (!e)
		return 0;
	__builtin_memcpy(e->name, name, sizeof(e->name));
	__builtin_memset(e->obj, 0, sizeof(e->obj));
	e->count = 0;
	__u64 args = stella_usdt_arg(ctx, &spec->args[1]);
	__u64 items[3] = {};
	if (args) {
		bpf_probe_read_user(&e->count, sizeof(e->count), (void *)(args + 16)); /* ob_size */
		bpf_probe_read_user(items, sizeof(items), (void *)(args + 24));       /* ob_item */
	}
	__u32 str_data = spec->py_str_data;
	if (e->count > 0)
		stella_py_obj(&e->obj[0], items[0], str_data);
	if (e->count > 1)
		stella_py_obj(&e->obj[1], items[1], str_data);
	if (e->count > 2)
		stella_py_obj(&e->obj[2], items[2], str_data);
	if (e->count > 1 && stella_is_type(e->obj[1].type, 't', 'u', 'p', 'l')) {
		__u64 inner[2] = {};
		bpf_probe_read_user(inner, sizeof(inner), (void *)(items[1] + 24));
		stella_py_obj(&e->obj[3], inner[0], str_data);
		stella_py_obj(&e->obj[4], inner[1], str_data);
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}
