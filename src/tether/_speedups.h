/* What the two sources of tether._speedups share.
 *
 *   _speedups.c             masking, frame building and scanning, masking
 *                           keys, the module itself
 *   _speedups_connection.c  ConnectionBase: the per-message path of
 *                           tether.aio.Connection
 *   _speedups_waiter.c      Waiter: the future that recv() waits on
 *   _speedups_operation.c   Operation: the awaitable that recv() and send()
 *                           return
 */

#ifndef TETHER_SPEEDUPS_H
#define TETHER_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#define MASK_POOL_SIZE 256 /* getentropy() returns at most 256 bytes per call */

/* The slots of tether.protocol.connection.Connection (the core) that
 * ConnectionBase reads and writes in place; bind_core() finds their offsets. */
enum core_slot {
    CORE_SINK,
    CORE_SINK_B0,
    CORE_BUF,
    CORE_DISCARD,
    CORE_MSG_OP,
    CORE_MASKED_IN,
    CORE_MAX_SIZE,
    CORE_RSV_ALLOWED,
    CORE_EVENTS,
    CORE_PENDING_CLOSE,
    CORE_OUT,
    CORE_STATE,
    CORE_CLOSE_SENT,
    CORE_SEND_OP,
    CORE_DEFLATE,
    CORE_MASKED_OUT,
    CORE_MASK_KEY,
    CORE_PEEK,
    CORE_NSLOTS
};

/* Method names that ConnectionBase calls, interned once per module. */
enum method_name {
    NAME_PY_GET_BUFFER,
    NAME_PY_BUFFER_UPDATED,
    NAME_PY_SEND_NOWAIT,
    NAME_AFTER_SCAN,
    NAME_HANDLE_EVENTS,
    NAME_AFTER_EVENTS,
    NAME_SINK_PROGRESS,
    NAME_PUT,
    NAME_HANDLER_FAILED,
    NAME_RECEIVE_BUFFER,
    NAME_WRITE,
    NAME_WRITELINES,
    NAME_GATHER_WRITES,
    NAME_SET_READ_LOW_WATER,
    NAME_WAKE,
    NAME_CALL_SOON,
    NAME_CALL_EXCEPTION_HANDLER,
    NAME_POP,
    NAME_PY_RECV,
    NAME_PY_SEND,
    NAME_DRAIN,
    NAME_LOCKED,
    NAME_THROW,
    NAME_CLOSE,
    NAME_COUNT
};

typedef struct {
    /* The ints 0-255 (every first byte), so that scan_frames takes a
     * reference instead of calling PyLong_FromLong per frame. */
    PyObject *first_bytes[256];
    /* masking_key(): random bytes not handed out yet are
     * mask_pool[mask_pos:]; filled in fork generation mask_generation. */
    unsigned char mask_pool[MASK_POOL_SIZE];
    int mask_pos;
    unsigned long mask_generation;
    /* bind_core(): the core's class (NULL until bound), State.OPEN, and
     * the byte offsets of the slots in enum core_slot. */
    PyTypeObject *core_type;
    PyObject *open_state;
    Py_ssize_t core_offsets[CORE_NSLOTS];
    PyObject *names[NAME_COUNT];
    PyTypeObject *sink_type; /* PayloadSink */
    PyTypeObject *waiter_type; /* Waiter */
    PyTypeObject *operation_type; /* Operation */
    PyObject *kw_context;      /* ("context",): call_soon's keyword */
    /* asyncio.Task, and asyncio.tasks._current_tasks (or current_task),
     * once a Waiter first wakes */
    PyObject *task_type;
    PyObject *current_task;
    PyObject *base_loop_type; /* asyncio.BaseEventLoop */
    PyObject *closed_ok_type; /* tether.exceptions.ConnectionClosedOK, once needed */
} speedups_state;

/* Scan buf[pos:end] as scan_frames() does (max_frame and max_overflow:
 * PyLong_AsLongLongAndOverflow of max_frame_obj, which names the limit in the
 * error's reason). On success (0): *frames is a new
 * list of the frames left over, or NULL if there are none; *pos_out is where
 * scanning stopped; *error a new (code, reason) tuple or NULL. -1 with an
 * exception set on failure. */
int tether_scan(speedups_state *state, const uint8_t *buf, Py_ssize_t pos, Py_ssize_t end,
                int masked, long long max_frame, int max_overflow, PyObject *max_frame_obj,
                unsigned long rsv_allowed, PyObject *events, PyObject **frames,
                Py_ssize_t *pos_out, PyObject **error);

/* RFC 6455 section 5.2, "Payload length: 7 bits, 7+16 bits, or 7+64 bits":
 * the length announced by the frame header at p, of which avail bytes are
 * there. 1 with *length and *header_len (the header's size without the
 * masking key) set; 0 if the length's bytes are not all in. */
static inline int
tether_read_length(const uint8_t *p, Py_ssize_t avail, uint64_t *length, Py_ssize_t *header_len)
{
    uint64_t value;
    int k;
    if (avail < 2) {
        return 0;
    }
    value = p[1] & 0x7F;
    *header_len = 2;
    if (value == 126) {
        if (avail < 4) {
            return 0;
        }
        value = ((uint64_t)p[2] << 8) | p[3];
        *header_len = 4;
    }
    else if (value == 127) {
        if (avail < 10) {
            return 0;
        }
        value = 0;
        for (k = 2; k < 10; k++) {
            value = (value << 8) | p[k];
        }
        *header_len = 10;
    }
    *length = value;
    return 1;
}

/* Write the header of a frame with first byte first_byte and an n-byte
 * payload into out (room for 10 bytes), in the shortest length form (section
 * 5.2: "the minimal number of bytes MUST be used to encode the length"), the
 * mask bit set if masked; the masking key itself is not written. Returns
 * the bytes written. */
static inline Py_ssize_t
tether_write_header(uint8_t *out, uint8_t first_byte, uint64_t n, int masked)
{
    const uint8_t mask_bit = masked ? 0x80 : 0;
    int shift;
    out[0] = first_byte;
    if (n < 126) {
        out[1] = (uint8_t)(mask_bit | (uint8_t)n);
        return 2;
    }
    if (n < 65536) {
        out[1] = (uint8_t)(mask_bit | 126);
        out[2] = (uint8_t)(n >> 8);
        out[3] = (uint8_t)n;
        return 4;
    }
    out[1] = (uint8_t)(mask_bit | 127);
    for (shift = 56; shift >= 0; shift -= 8) {
        out[2 + (56 - shift) / 8] = (uint8_t)(n >> shift);
    }
    return 10;
}

/* One frame as build_frame() makes it; mask is 4 bytes or NULL. */
PyObject *tether_frame(uint8_t first_byte, const uint8_t *payload, Py_ssize_t n,
                       const uint8_t *mask);

/* The next 4-byte masking key, as masking_key() hands it out: into out (0,
 * or -1 with an exception). */
int tether_masking_key_into(speedups_state *state, uint8_t out[4]);

/* Copy a 4-byte masking key out of any bytes-like object (ValueError unless
 * it is 4 bytes long). */
int tether_get_mask(PyObject *obj, uint8_t out[4]);

/* Whether obj is this extension's masking_key function. */
int tether_is_masking_key(PyObject *obj);

/* A PayloadSink's buffer() and written(n), and its remaining bytes. */
PyObject *tether_sink_buffer(PyObject *sink);
int tether_sink_written(PyObject *sink, PyObject *n);
Py_ssize_t tether_sink_remaining(PyObject *sink);

/* A new PayloadSink of `size` bytes (mask: 4 bytes, or NULL if unmasked),
 * filled with the first n bytes of the payload at data, as feed() would. */
PyObject *tether_sink_start(speedups_state *state, Py_ssize_t size, const uint8_t *mask,
                            const uint8_t *data, Py_ssize_t n);

/* A PayloadSink's take(): the finished payload (a new reference). */
PyObject *tether_sink_take(PyObject *sink);

/* bind_core(core_type, open_state): see _speedups_connection.c. */
PyObject *tether_bind_core(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* The raised exception as one object (its traceback attached), cleared; a
 * new reference. */
PyObject *tether_fetch_exception(void);

/* Add ConnectionBase to the module (from its exec slot). */
int tether_add_connection_base(PyObject *module);

/* Add Waiter to the module (from its exec slot). */
int tether_add_waiter(PyObject *module, speedups_state *state);

/* Whether obj is a Waiter (exactly). */
int tether_is_waiter(speedups_state *state, PyObject *obj);

/* Waiter.resolve(result): 1 if it completed the waiter, 0 if it was done. */
int tether_waiter_resolve(PyObject *waiter, PyObject *result);

/* Waiter.wake(): 0, or -1 with an exception. */
int tether_waiter_wake(speedups_state *state, PyObject *waiter);

/* The module state, from an instance of one of the module's classes or of
 * a subclass (NULL with an exception if it is neither). */
speedups_state *tether_state_of(PyObject *obj);

/* A new pending Waiter on loop, or NULL. */
PyObject *tether_waiter_new(speedups_state *state, PyObject *loop);

/* Whether a Waiter is done (completed or cancelled). */
int tether_waiter_done(PyObject *waiter);

/* What tp_iternext returns for an am_send outcome: the yielded value, or
 * NULL with StopIteration(value) raised (steals value), or NULL as it is. */
PyObject *tether_iternext_result(PySendResult rc, PyObject *value);

/* The first step of recv() and send(message) (_speedups_connection.c):
 * *out is the result (START_DONE), the connection's new recv() waiter
 * (START_WAIT: tether_recv_unlink it when done with it), or a Python
 * coroutine to delegate to (START_DELEGATE); new references. START_ERROR
 * with an exception raised. */
enum { START_ERROR = -1, START_DONE, START_WAIT, START_DELEGATE };
int tether_recv_start(speedups_state *state, PyObject *conn, PyObject **out);
int tether_send_start(speedups_state *state, PyObject *conn, PyObject *message, PyObject **out);

/* Forget waiter as the connection's recv() waiter, if it still is. */
void tether_recv_unlink(PyObject *conn, PyObject *waiter);

/* The awaitable of conn.recv(), conn.send(message) or conn.__anext__(). */
enum operation_kind { OP_RECV, OP_SEND, OP_NEXT };
PyObject *tether_operation_new(speedups_state *state, PyObject *conn, int kind,
                               PyObject *message);

/* Add Operation to the module (from its exec slot). */
int tether_add_operation(PyObject *module, speedups_state *state);

#endif /* TETHER_SPEEDUPS_H */
