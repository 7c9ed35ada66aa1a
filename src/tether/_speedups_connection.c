/* tether._speedups.ConnectionBase: the per-message path of
 * tether.aio.Connection, compiled.
 *
 * Between reading a message and writing the reply, the Python connection
 * runs seven Python frames: get_buffer, buffer_updated, the core's
 * receive_data, _handle_events, the application's handler, send_nowait and
 * the core's encode_message. This base class of tether.aio.Connection runs
 * all of them but the handler in C:
 *
 *   get_buffer(sizehint)   the thread's scratch buffer, or the unfilled
 *                          part of a large frame's payload
 *   buffer_updated(n)      scans the bytes read with the scan_frames loop and
 *                          hands each whole message to the message handler,
 *                          or to the coroutine waiting in recv(); starts,
 *                          fills and completes the payload sink of a large
 *                          binary message in one frame
 *   send_nowait(message)   builds the frame and writes it (a large unmasked
 *                          binary one as header + payload, not copied)
 *   recv(), send(message), __anext__()
 *                          awaitables without a Python frame
 *                          (_speedups_operation.c) that start here:
 *                          tether_recv_start and tether_send_start
 *
 * Only the common case runs here: an open connection, whole messages in
 * whole frames, no compression on the way out. Everything else (the opening
 * handshake, a partial frame that is not a large binary message, a control
 * frame, a fragmented or compressed message, a close, a framing error) goes to the
 * Python twins (Connection._py_get_buffer, _py_buffer_updated,
 * _py_send_nowait; the core's _after_scan; _handle_events, _after_events,
 * _put). The protocol's rules are written once, in Python, and the
 * pure-Python run of the test suite checks them.
 *
 * The core (tether.protocol.connection.Connection) keeps its state in
 * __slots__; bind_core() takes their offsets from the class's member
 * descriptors once, so reading `core._sink` here is one load. A core of any
 * other class takes the Python path.
 */

#include "_speedups.h"

#include <stddef.h>
#include <string.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *core;            /* the sans-I/O core, None before the handshake */
    PyObject *transport;
    PyObject *message_handler; /* set_message_handler() */
    PyObject *scratch;         /* the thread's read buffer (a memoryview) */
    PyObject *waiter;          /* the future recv() waits on */
    PyObject *queue;           /* messages not read yet (a deque), or None */
    PyObject *wake;            /* a waiter this read completed, or None */
    PyObject *loop;            /* the event loop */
    PyObject *closed_exc;      /* the ConnectionClosed once closed, or None */
    PyObject *send_lock;       /* asyncio.Lock of fragmented sends, or None */
    char lent;                 /* get_buffer() lent the core's payload sink */
    char reading;              /* a read is being handled */
    char write_paused;         /* the transport asked to pause writing */
    char gathers;              /* tether's transport: gather_writes(), set_read_low_water() */
} ConnectionBaseObject;

/* A slot of the core, borrowed; NULL if unset. Only for a core whose type is
 * state->core_type. */
#define SLOT(state, core, i) (*(PyObject **)((char *)(core) + (state)->core_offsets[i]))

static inline int
is_none(PyObject *obj)
{
    return obj == NULL || obj == Py_None;
}

/* The core, if it is the bound class (borrowed); else NULL. */
static inline PyObject *
bound_core(speedups_state *state, ConnectionBaseObject *self)
{
    PyObject *core = self->core;
    if (core == NULL || state->core_type == NULL || !Py_IS_TYPE(core, state->core_type)) {
        return NULL;
    }
    return core;
}

/* obj.<names[name]>(*args, **kwnames), the keyword values after args as in
 * a vectorcall: the Python methods this path hands over to, and a call
 * handed to a Python twin as it came. */
static PyObject *
call_method(speedups_state *state, PyObject *obj, int name, PyObject *const *args,
            Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t total = nargs + (kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *small[8];
    PyObject **stack = total < 8 ? small : PyMem_New(PyObject *, total + 1);
    PyObject *r;
    if (stack == NULL) {
        return PyErr_NoMemory();
    }
    stack[0] = obj;
    if (total > 0) {
        memcpy(stack + 1, args, (size_t)total * sizeof(PyObject *));
    }
    r = PyObject_VectorcallMethod(state->names[name], stack,
                                  ((size_t)nargs + 1) | PY_VECTORCALL_ARGUMENTS_OFFSET, kwnames);
    if (stack != small) {
        PyMem_Free(stack);
    }
    return r;
}

/* Whether obj is an int below 0 (False for anything else). */
static inline int
is_negative_int(PyObject *obj)
{
    int overflow;
    long value;
    if (obj == NULL || !PyLong_CheckExact(obj)) {
        return 0;
    }
    value = PyLong_AsLongAndOverflow(obj, &overflow);
    return overflow < 0 || (overflow == 0 && value < 0);
}

/* Connection._put(item), with its common case inline: a coroutine waits in
 * recv() on a Waiter and nothing is queued before it. The waiter is resolved
 * here and woken as the read ends (end_read): the C handle_events, the only
 * caller, runs inside buffer_updated. Anything else goes to _put. */
static int
put(speedups_state *state, ConnectionBaseObject *self, PyObject *item)
{
    PyObject *waiter = self->waiter;
    PyObject *r;
    if (tether_is_waiter(state, waiter)) {
        int queued = is_none(self->queue) ? 0 : PyObject_IsTrue(self->queue);
        if (queued < 0) {
            return -1;
        }
        if (!queued) {
            self->waiter = Py_NewRef(Py_None); /* the waiter's reference is ours */
            if (tether_waiter_resolve(waiter, item)) {
                Py_XSETREF(self->wake, waiter); /* the reference moves */
                return 0;
            }
            Py_DECREF(waiter); /* a cancelled recv(): _put queues the message */
        }
    }
    r = call_method(state, (PyObject *)self, NAME_PUT, &item, 1, NULL);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* Messages handed out per read without a new list. */
#define BATCH 16

/* Drop a batch: its items (moved out of the core's list), or the old list
 * that holds them. */
static void
release_batch(PyObject **items, Py_ssize_t count, PyObject *list)
{
    Py_ssize_t i;
    if (list != NULL) {
        Py_DECREF(list);
        return;
    }
    for (i = 0; i < count; i++) {
        Py_DECREF(items[i]);
    }
}

/* Connection._handle_events(core) for a batch of whole messages; any other
 * batch goes to the Python method. Returns a new reference to None, or NULL. */
static PyObject *
handle_events(speedups_state *state, ConnectionBaseObject *self, PyObject *core)
{
    PyObject *events = SLOT(state, core, CORE_EVENTS);
    PyObject *out, *fresh, *handler = NULL;
    PyObject *batch[BATCH], **items;
    Py_ssize_t count, i;
    int queued = 0;

    if (events == NULL || !PyList_CheckExact(events) ||
            SLOT(state, core, CORE_PENDING_CLOSE) != Py_None) {
        return call_method(state, (PyObject *)self, NAME_HANDLE_EVENTS, &core, 1, NULL);
    }
    count = PyList_GET_SIZE(events);
    if (count > 0) {
        for (i = 0; i < count; i++) {
            PyObject *item = PyList_GET_ITEM(events, i);
            if (!PyUnicode_CheckExact(item) && !PyBytes_CheckExact(item)) {
                /* a control frame, a fragment, a close: the Python path */
                return call_method(state, (PyObject *)self, NAME_HANDLE_EVENTS, &core, 1, NULL);
            }
        }
        if (count > 1 && self->gathers && self->transport != NULL) {
            /* several messages in one read: their replies leave together
             * (tether's transport; see Transport.gather_writes) */
            PyObject *r = call_method(state, self->transport, NAME_GATHER_WRITES, NULL, 0, NULL);
            if (r == NULL) {
                return NULL;
            }
            Py_DECREF(r);
        }
        /* The batch is ours from here on: the Python path gives the core a
         * new list (core.events = []); a batch that fits BATCH is moved out
         * and the list emptied in place, keeping its storage for the next
         * read. */
        if (count <= BATCH) {
            memcpy(batch, ((PyListObject *)events)->ob_item, (size_t)count * sizeof(PyObject *));
            Py_SET_SIZE(events, 0); /* the references moved to batch */
            items = batch;
            events = NULL;
        }
        else {
            fresh = PyList_New(0);
            if (fresh == NULL) {
                return NULL;
            }
            SLOT(state, core, CORE_EVENTS) = fresh; /* the slot's reference to events is ours */
            items = ((PyListObject *)events)->ob_item;
        }
        handler = is_none(self->message_handler) ? NULL : Py_NewRef(self->message_handler);
        for (i = 0; i < count; i++) {
            PyObject *item = items[i];
            if (handler != NULL) {
                PyObject *r = PyObject_CallOneArg(handler, item);
                if (r != NULL) {
                    Py_DECREF(r);
                    continue;
                }
                /* except Exception as exc: self._handler_failed(exc) */
                if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                    goto fail;
                }
                PyObject *exc = tether_fetch_exception();
                r = call_method(state, (PyObject *)self, NAME_HANDLER_FAILED, &exc, 1, NULL);
                Py_XDECREF(exc);
                if (r == NULL) {
                    goto fail;
                }
                Py_DECREF(r);
            }
            else {
                if (put(state, self, item) < 0) {
                    goto fail;
                }
                queued = 1;
            }
        }
        Py_XDECREF(handler);
        release_batch(items, count, events);
    }
    /* if core._out or core._pending_close is not None:
     *     self._after_events(core, queued) */
    out = SLOT(state, core, CORE_OUT);
    if (SLOT(state, core, CORE_PENDING_CLOSE) != Py_None ||
            (out != NULL && (PyList_CheckExact(out) ? PyList_GET_SIZE(out) > 0
                                                    : PyObject_IsTrue(out) != 0))) {
        PyObject *args[2] = {core, queued ? Py_True : Py_False};
        return call_method(state, (PyObject *)self, NAME_AFTER_EVENTS, args, 2, NULL);
    }
    Py_RETURN_NONE;

fail:
    Py_XDECREF(handler);
    release_batch(items, count, events);
    return NULL;
}

PyDoc_STRVAR(get_buffer_doc,
"get_buffer($self, sizehint, /)\n--\n\n"
"asyncio.BufferedProtocol: the buffer for the next read (the thread's\n"
"scratch buffer; while a large frame arrives, the rest of its payload).");

static PyObject *
conn_get_buffer(ConnectionBaseObject *self, PyTypeObject *cls, PyObject *const *args,
                Py_ssize_t nargs, PyObject *kwnames)
{
    speedups_state *state = PyType_GetModuleState(cls);
    PyObject *core = self->core;
    if (nargs == 1 && kwnames == NULL) {
        if (is_none(core)) {
            return Py_NewRef(self->scratch != NULL ? self->scratch : Py_None);
        }
        core = bound_core(state, self);
        if (core != NULL) {
            PyObject *sink = SLOT(state, core, CORE_SINK);
            if (sink == Py_None) {
                return Py_NewRef(self->scratch != NULL ? self->scratch : Py_None);
            }
            if (sink != NULL && Py_IS_TYPE(sink, state->sink_type) &&
                    SLOT(state, core, CORE_DISCARD) == Py_False) {
                /* A large frame is arriving: read straight into the rest of
                 * its payload (core.receive_buffer()). */
                PyObject *buf = tether_sink_buffer(sink);
                if (buf != NULL) {
                    self->lent = 1;
                }
                return buf;
            }
        }
    }
    return call_method(state, (PyObject *)self, NAME_PY_GET_BUFFER, args, nargs, kwnames);
}

PyDoc_STRVAR(buffer_updated_doc,
"buffer_updated($self, nbytes, /)\n--\n\n"
"asyncio.BufferedProtocol: ``nbytes`` were read into get_buffer()'s buffer;\n"
"deliver the messages they complete.");

/* Frames from this size on are assembled in a PayloadSink when they span
 * reads (tether.protocol.connection._SINK_MIN). */
#define SINK_MIN 4096

/* Core._after_scan's large frame, for a binary message in one frame (the
 * common case; any other frame takes the Python path): buf[pos:n] holds the
 * start of a frame that scan vetted but could not complete. If its header
 * is in, its payload is at least SINK_MIN bytes and a quarter of the frame
 * has arrived, start the core's payload sink with what is here: 1. If not
 * this case: 0, nothing changed. -1 with an exception set on failure. */
static int
start_sink(speedups_state *state, PyObject *core, const uint8_t *buf, Py_ssize_t pos,
           Py_ssize_t n, int masked)
{
    const Py_ssize_t avail = n - pos;
    Py_ssize_t header;
    uint64_t length;
    PyObject *sink;

    if (avail < 2 || buf[pos] != 0x82 || !tether_read_length(buf + pos, avail, &length, &header)) {
        return 0;
    }
    if (masked) {
        header += 4;
    }
    /* The sink allocates the whole payload, so it waits until a quarter of
     * the frame is in: a peer that announces a large frame and stalls makes
     * us hold at most 4x what it actually sent. */
    if (avail < header || length < SINK_MIN || (uint64_t)avail * 4 < length) {
        return 0;
    }
    sink = tether_sink_start(state, (Py_ssize_t)length, masked ? buf + pos + header - 4 : NULL,
                             buf + pos + header, avail - header);
    if (sink == NULL) {
        return -1;
    }
    Py_XSETREF(SLOT(state, core, CORE_SINK), sink);
    Py_XSETREF(SLOT(state, core, CORE_SINK_B0), Py_NewRef(state->first_bytes[0x82]));
    Py_XSETREF(SLOT(state, core, CORE_PEEK), Py_NewRef(Py_None));
    return 1;
}

/* A large frame's payload is still arriving and nothing short of
 * `remaining` more bytes completes it: tell tether's transport, which then
 * wakes us once a useful amount is in rather than for every segment
 * (Transport.set_read_low_water; on a busy loopback that is most of the
 * wake-ups of a 1 MiB message). Other transports lack it. 0, or -1 with an
 * exception set. */
static int
ask_low_water(speedups_state *state, ConnectionBaseObject *self, PyObject *sink)
{
    Py_ssize_t remaining = tether_sink_remaining(sink);
    PyObject *n, *r;
    if (remaining <= 1 || !self->gathers || self->transport == NULL) {
        return 0;
    }
    n = PyLong_FromSsize_t(remaining);
    if (n == NULL) {
        return -1;
    }
    r = call_method(state, self->transport, NAME_SET_READ_LOW_WATER, &n, 1, NULL);
    Py_DECREF(n);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* The fast path of buffer_updated: 1 if it ran (*result set: None or NULL
 * for an exception), 0 if the state needs the Python path. */
static int
fast_buffer_updated(speedups_state *state, ConnectionBaseObject *self, PyObject *core,
                    PyObject *nbytes, PyObject **result)
{
    PyObject *events = SLOT(state, core, CORE_EVENTS);
    PyObject *msg_op = SLOT(state, core, CORE_MSG_OP);
    const int whole = is_negative_int(msg_op); /* no fragmented message in progress */
    PyObject *masked = SLOT(state, core, CORE_MASKED_IN);
    PyObject *max_size = SLOT(state, core, CORE_MAX_SIZE);
    PyObject *rsv = SLOT(state, core, CORE_RSV_ALLOWED);
    PyObject *frames, *error;
    long long max_frame;
    int overflow, rc;
    unsigned long rsv_allowed;
    Py_ssize_t n, pos;
    Py_buffer view;

    if (SLOT(state, core, CORE_DISCARD) != Py_False || SLOT(state, core, CORE_SINK) != Py_None ||
            SLOT(state, core, CORE_BUF) != Py_None ||
            SLOT(state, core, CORE_PENDING_CLOSE) != Py_None || events == NULL ||
            !PyList_CheckExact(events) || msg_op == NULL || !PyLong_CheckExact(msg_op) ||
            (masked != Py_True && masked != Py_False) || max_size == NULL ||
            !PyLong_CheckExact(max_size) || rsv == NULL || !PyLong_CheckExact(rsv) ||
            self->scratch == NULL || !PyLong_Check(nbytes)) {
        return 0;
    }
    max_frame = PyLong_AsLongLongAndOverflow(max_size, &overflow);
    rsv_allowed = PyLong_AsUnsignedLongMask(rsv);
    n = PyLong_AsSsize_t(nbytes);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 0; /* out of range: the Python path says so */
    }
    if (PyObject_GetBuffer(self->scratch, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        return 0;
    }
    if (n < 0 || n > view.len) {
        PyBuffer_Release(&view);
        return 0;
    }
    Py_INCREF(core); /* the handler may replace it */
    /* Whole messages go straight to core.events unless a fragmented
     * message is in progress (then every frame goes through _after_scan). */
    rc = tether_scan(state, (const uint8_t *)view.buf, 0, n, masked == Py_True, max_frame,
                     overflow, max_size, rsv_allowed, whole ? events : NULL, &frames, &pos,
                     &error);
    if (rc == 0 && frames == NULL && error == NULL && pos != n && whole) {
        /* The read ends inside a frame: a large binary one goes to a sink. */
        rc = start_sink(state, core, (const uint8_t *)view.buf, pos, n, masked == Py_True);
        if (rc > 0) {
            pos = n;
            rc = ask_low_water(state, self, SLOT(state, core, CORE_SINK));
        }
    }
    PyBuffer_Release(&view);
    if (rc < 0) {
        *result = NULL;
        goto done;
    }
    if (frames != NULL || error != NULL || pos != n) {
        /* Frames for the state machine, an error, or a partial frame. */
        PyObject *pos_obj = PyLong_FromSsize_t(pos);
        PyObject *r = NULL;
        if (pos_obj != NULL && (frames != NULL || (frames = PyList_New(0)) != NULL)) {
            PyObject *args[5] = {self->scratch, nbytes, frames, pos_obj,
                                 error != NULL ? error : Py_None};
            r = call_method(state, core, NAME_AFTER_SCAN, args, 5, NULL);
        }
        Py_XDECREF(pos_obj);
        Py_XDECREF(frames);
        Py_XDECREF(error);
        if (r == NULL) {
            *result = NULL;
            goto done;
        }
        Py_DECREF(r);
    }
    *result = handle_events(state, self, core);
done:
    Py_DECREF(core);
    return 1;
}

/* The fast path of buffer_updated after a read into a payload sink (see
 * get_buffer): core.receive_into(nbytes) then _handle_events, with the
 * payload's progress in C while its frame is binary and incomplete. Same
 * return convention as fast_buffer_updated. */
static int
fast_sink_updated(speedups_state *state, ConnectionBaseObject *self, PyObject *core,
                  PyObject *nbytes, PyObject **result)
{
    PyObject *sink = SLOT(state, core, CORE_SINK);
    PyObject *b0 = SLOT(state, core, CORE_SINK_B0);
    PyObject *msg_op = SLOT(state, core, CORE_MSG_OP);
    PyObject *events = SLOT(state, core, CORE_EVENTS);
    PyObject *r;
    long first, opcode, message_op;

    if (sink == NULL || !Py_IS_TYPE(sink, state->sink_type) ||
            SLOT(state, core, CORE_DISCARD) != Py_False || b0 == NULL ||
            !PyLong_CheckExact(b0) || msg_op == NULL || !PyLong_CheckExact(msg_op)) {
        return 0;
    }
    first = PyLong_AsLong(b0);
    opcode = first & 0x0F;
    message_op = PyLong_AsLong(msg_op);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    self->lent = 0;
    Py_INCREF(core);
    Py_INCREF(sink);
    if (tether_sink_written(sink, nbytes) < 0 || ask_low_water(state, self, sink) < 0) {
        *result = NULL;
        goto done;
    }
    /* Core._sink_progress: partial text is validated as it arrives, and a
     * complete payload becomes a frame. A binary message in one frame
     * becomes the event here, as scan_frames delivers a whole one; the
     * Python path does the rest (for an incomplete binary payload there is
     * nothing to do). */
    if (tether_sink_remaining(sink) == 0 && first == 0x82 && message_op == -1 &&
            events != NULL && PyList_CheckExact(events)) {
        PyObject *payload = tether_sink_take(sink);
        int rc = payload != NULL ? PyList_Append(events, payload) : -1;
        Py_XDECREF(payload);
        if (rc < 0) {
            *result = NULL;
            goto done;
        }
        Py_XSETREF(SLOT(state, core, CORE_SINK), Py_NewRef(Py_None));
        Py_XSETREF(SLOT(state, core, CORE_PEEK), Py_NewRef(Py_None));
    }
    else if (tether_sink_remaining(sink) == 0 ||
            ((opcode == 0 || opcode == 1) && (message_op == -1 || message_op == 1))) {
        r = call_method(state, core, NAME_SINK_PROGRESS, NULL, 0, NULL);
        if (r == NULL) {
            *result = NULL;
            goto done;
        }
        Py_DECREF(r);
    }
    *result = handle_events(state, self, core);
done:
    Py_DECREF(sink);
    Py_DECREF(core);
    return 1;
}

/* Connection._end_read: the read is handled; wake the task whose recv() it
 * completed. Takes result (None, or NULL with an exception raised) and
 * returns what buffer_updated returns: an exception from the wake-up
 * replaces an earlier one, as in a finally clause. */
static PyObject *
end_read(speedups_state *state, ConnectionBaseObject *self, PyObject *result)
{
    PyObject *waiter = self->wake;
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    int rc;
    self->reading = 0;
    if (is_none(waiter)) {
        return result;
    }
    self->wake = Py_NewRef(Py_None); /* the waiter's reference is ours */
    if (result == NULL) {
        PyErr_Fetch(&type, &value, &tb);
    }
    if (tether_is_waiter(state, waiter)) {
        rc = tether_waiter_wake(state, waiter);
    }
    else {
        PyObject *r = call_method(state, waiter, NAME_WAKE, NULL, 0, NULL);
        rc = r == NULL ? -1 : 0;
        Py_XDECREF(r);
    }
    Py_DECREF(waiter);
    if (rc < 0) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        Py_XDECREF(result);
        return NULL;
    }
    if (result == NULL) {
        PyErr_Restore(type, value, tb);
    }
    return result;
}

static PyObject *
conn_buffer_updated(ConnectionBaseObject *self, PyTypeObject *cls, PyObject *const *args,
                    Py_ssize_t nargs, PyObject *kwnames)
{
    speedups_state *state = PyType_GetModuleState(cls);
    PyObject *core = bound_core(state, self);
    PyObject *result;
    if (nargs == 1 && kwnames == NULL && core != NULL) {
        int ran;
        self->reading = 1;
        ran = self->lent ? fast_sink_updated(state, self, core, args[0], &result)
                         : fast_buffer_updated(state, self, core, args[0], &result);
        if (ran) {
            return end_read(state, self, result);
        }
        self->reading = 0; /* the Python twin sets it again */
    }
    return call_method(state, (PyObject *)self, NAME_PY_BUFFER_UPDATED, args, nargs, kwnames);
}

PyDoc_STRVAR(send_nowait_doc,
"send_nowait($self, message, /)\n--\n\n"
"Send a whole message without waiting for the peer to read it.\n\n"
"For code that runs on the event loop but cannot await (message\n"
"handlers, callbacks). The bytes are buffered without bound: check\n"
":attr:`buffered_amount`, or use ``await send()`` which waits.");

/* Unmasked binary messages from this size on are written as header and
 * payload, the payload not copied (tether.aio.connection._WRITELINES_MIN). */
#define WRITELINES_MIN 65536

/* transport.<names[name]>(data), taking the reference to data (NULL: an
 * exception is already set): None, or NULL. */
static PyObject *
call_transport(speedups_state *state, PyObject *transport, int name, PyObject *data)
{
    PyObject *r;
    if (data == NULL) {
        return NULL;
    }
    Py_INCREF(transport); /* a write may close the connection and drop it */
    r = call_method(state, transport, name, &data, 1, NULL);
    Py_DECREF(transport);
    Py_DECREF(data);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* transport.writelines((header, payload)) for an unmasked binary message of
 * at least WRITELINES_MIN bytes (one writev() with tether's transport). */
static PyObject *
send_header_and_payload(speedups_state *state, PyObject *transport, PyObject *payload)
{
    uint8_t header[10];
    const Py_ssize_t header_len =
        tether_write_header(header, 0x82, (uint64_t)PyBytes_GET_SIZE(payload), 0);
    PyObject *lines = PyTuple_New(2);
    if (lines == NULL) {
        return NULL;
    }
    PyTuple_SET_ITEM(lines, 1, Py_NewRef(payload));
    PyTuple_SET_ITEM(lines, 0, PyBytes_FromStringAndSize((const char *)header, header_len));
    if (PyTuple_GET_ITEM(lines, 0) == NULL) {
        Py_DECREF(lines);
        return NULL;
    }
    return call_transport(state, transport, NAME_WRITELINES, lines);
}

/* send_nowait(message) for one positional argument: None, or NULL. */
static PyObject *
send_nowait(speedups_state *state, ConnectionBaseObject *self, PyObject *message)
{
    PyObject *core = bound_core(state, self);
    PyObject *transport = self->transport;
    PyObject *send_op, *masked;
    const char *data;
    Py_ssize_t n;
    uint8_t first, mask[4];

    if (core == NULL || is_none(transport)) {
        goto python;
    }
    send_op = SLOT(state, core, CORE_SEND_OP);
    masked = SLOT(state, core, CORE_MASKED_OUT);
    /* Open, no close sent, no fragmented message in progress, no
     * compression: anything else is the Python path's to handle. */
    if (SLOT(state, core, CORE_STATE) != state->open_state ||
            SLOT(state, core, CORE_CLOSE_SENT) != Py_None ||
            SLOT(state, core, CORE_DEFLATE) != Py_None || !is_negative_int(send_op) ||
            (masked != Py_True && masked != Py_False)) {
        goto python;
    }
    if (PyUnicode_CheckExact(message)) {
        data = PyUnicode_AsUTF8AndSize(message, &n);
        if (data == NULL) {
            PyErr_Clear(); /* lone surrogates: message.encode() raises */
            goto python;
        }
        first = 0x81;
    }
    else if (PyBytes_CheckExact(message)) {
        data = PyBytes_AS_STRING(message);
        n = PyBytes_GET_SIZE(message);
        first = 0x82;
        if (n >= WRITELINES_MIN && masked == Py_False) {
            return send_header_and_payload(state, transport, message);
        }
    }
    else {
        goto python;
    }
    if (masked == Py_True) {
        /* RFC 6455 section 5.3: "The masking key is a 32-bit value chosen at
         * random by the client ... a fresh masking key for each frame". */
        PyObject *source = SLOT(state, core, CORE_MASK_KEY);
        if (source == NULL) {
            goto python;
        }
        if (tether_is_masking_key(source)) {
            if (tether_masking_key_into(state, mask) < 0) {
                return NULL;
            }
        }
        else {
            /* the application's mask_source */
            PyObject *key = PyObject_CallNoArgs(source);
            int rc = key != NULL ? tether_get_mask(key, mask) : -1;
            Py_XDECREF(key);
            if (rc < 0) {
                return NULL;
            }
        }
    }
    return call_transport(
        state, transport, NAME_WRITE,
        tether_frame(first, (const uint8_t *)data, n, masked == Py_True ? mask : NULL));

python:
    return call_method(state, (PyObject *)self, NAME_PY_SEND_NOWAIT, &message, 1, NULL);
}

static PyObject *
conn_send_nowait(ConnectionBaseObject *self, PyTypeObject *cls, PyObject *const *args,
                 Py_ssize_t nargs, PyObject *kwnames)
{
    speedups_state *state = PyType_GetModuleState(cls);
    if (nargs != 1 || kwnames != NULL) {
        return call_method(state, (PyObject *)self, NAME_PY_SEND_NOWAIT, args, nargs, kwnames);
    }
    return send_nowait(state, self, args[0]);
}

/* ------------------------------------------------------------------------
 * recv() and send(message): the first step of their awaitables
 */

PyDoc_STRVAR(recv_doc,
"recv($self, /)\n--\n\n"
"The next message: a ``str`` for text, ``bytes`` for binary. Await it.\n\n"
"Raises :class:`ConnectionClosed` once the connection is closed and every\n"
"message received before the close was returned;\n"
":class:`ConcurrencyError` if another coroutine is already waiting.\n"
"With ``fragments=True`` or ``control_frames=True`` it may also return\n"
":class:`~tether.protocol.events.Fragment`, ``Ping`` or ``Pong`` events.\n\n"
"Returns a coroutine-like object (nothing runs until it is awaited); the\n"
"common case runs without a Python frame. _py_recv is its Python twin.");

int
tether_recv_start(speedups_state *state, PyObject *obj, PyObject **out)
{
    ConnectionBaseObject *self = (ConnectionBaseObject *)obj;
    PyObject *queue = self->queue, *waiter = self->waiter, *core, *fresh;
    if (!is_none(queue)) {
        Py_ssize_t queued = PyObject_Length(queue);
        if (queued < 0) {
            return START_ERROR;
        }
        if (queued > 0) {
            *out = call_method(state, obj, NAME_POP, NULL, 0, NULL);
            return *out != NULL ? START_DONE : START_ERROR;
        }
    }
    core = bound_core(state, self);
    /* Closed, a close to commit, another recv() waiting, a message handler,
     * no handshake yet: _py_recv raises or waits as the case needs. */
    if (!is_none(self->closed_exc) || core == NULL ||
            SLOT(state, core, CORE_PENDING_CLOSE) != Py_None ||
            !is_none(self->message_handler) || self->loop == NULL ||
            (!is_none(waiter) && !(tether_is_waiter(state, waiter) && tether_waiter_done(waiter)))) {
        *out = call_method(state, obj, NAME_PY_RECV, NULL, 0, NULL);
        return *out != NULL ? START_DELEGATE : START_ERROR;
    }
    fresh = tether_waiter_new(state, self->loop);
    if (fresh == NULL) {
        return START_ERROR;
    }
    Py_XSETREF(self->waiter, Py_NewRef(fresh));
    *out = fresh;
    return START_WAIT;
}

void
tether_recv_unlink(PyObject *obj, PyObject *waiter)
{
    ConnectionBaseObject *self = (ConnectionBaseObject *)obj;
    if (self->waiter == waiter) {
        Py_SETREF(self->waiter, Py_NewRef(Py_None));
    }
}

PyDoc_STRVAR(send_doc,
"send($self, message, /)\n--\n\n"
"Send a message: ``str`` as text, ``bytes``-like as binary. Await it.\n\n"
"An iterable (or async iterable) of ``str`` or of ``bytes`` is sent as\n"
"one fragmented message, one frame per item. Waits while more than\n"
"``write_limit`` bytes are buffered (the peer reads slowly). Raises\n"
":class:`ConnectionClosed` if the connection is closing or closed.\n\n"
"Returns a coroutine-like object (nothing is sent until it is awaited);\n"
"a whole str or bytes message goes out without a Python frame. _py_send is\n"
"its Python twin.");

int
tether_send_start(speedups_state *state, PyObject *obj, PyObject *message, PyObject **out)
{
    ConnectionBaseObject *self = (ConnectionBaseObject *)obj;
    PyObject *r;
    int busy = 0;
    if (!is_none(self->send_lock)) {
        /* a fragmented message on its way: this one waits for it (_py_send) */
        r = call_method(state, self->send_lock, NAME_LOCKED, NULL, 0, NULL);
        busy = r == NULL ? -1 : PyObject_IsTrue(r);
        Py_XDECREF(r);
        if (busy < 0) {
            return START_ERROR;
        }
    }
    if (busy || (!PyUnicode_CheckExact(message) && !PyBytes_CheckExact(message))) {
        /* bytes-likes and fragments too */
        *out = call_method(state, obj, NAME_PY_SEND, &message, 1, NULL);
        return *out != NULL ? START_DELEGATE : START_ERROR;
    }
    r = send_nowait(state, self, message);
    if (r == NULL) {
        return START_ERROR;
    }
    Py_DECREF(r);
    if (self->write_paused) {
        *out = call_method(state, obj, NAME_DRAIN, NULL, 0, NULL);
        return *out != NULL ? START_DELEGATE : START_ERROR;
    }
    *out = Py_NewRef(Py_None);
    return START_DONE;
}

static PyObject *
conn_recv(ConnectionBaseObject *self, PyTypeObject *cls, PyObject *const *args,
          Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 0 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "recv() takes no arguments");
        return NULL;
    }
    return tether_operation_new(PyType_GetModuleState(cls), (PyObject *)self, OP_RECV, NULL);
}

static PyObject *
conn_send(ConnectionBaseObject *self, PyTypeObject *cls, PyObject *const *args,
          Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "send() takes one positional argument: the message");
        return NULL;
    }
    return tether_operation_new(PyType_GetModuleState(cls), (PyObject *)self, OP_SEND, args[0]);
}

/* async for: __anext__ is recv() with a normal close as StopAsyncIteration
 * (_py_anext is its Python twin). */
static PyObject *
conn_anext(PyObject *self)
{
    speedups_state *state = tether_state_of(self);
    return state != NULL ? tether_operation_new(state, self, OP_NEXT, NULL) : NULL;
}

/* ------------------------------------------------------------------------
 * bind_core
 */

PyObject *
tether_bind_core(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    static const char *const slot_names[CORE_NSLOTS] = {
        [CORE_SINK] = "_sink",
        [CORE_SINK_B0] = "_sink_b0",
        [CORE_BUF] = "_buf",
        [CORE_DISCARD] = "_discard",
        [CORE_MSG_OP] = "_msg_op",
        [CORE_MASKED_IN] = "_masked_in",
        [CORE_MAX_SIZE] = "max_size",
        [CORE_RSV_ALLOWED] = "_rsv_allowed",
        [CORE_EVENTS] = "events",
        [CORE_PENDING_CLOSE] = "_pending_close",
        [CORE_OUT] = "_out",
        [CORE_STATE] = "state",
        [CORE_CLOSE_SENT] = "close_sent",
        [CORE_SEND_OP] = "_send_op",
        [CORE_DEFLATE] = "_deflate",
        [CORE_MASKED_OUT] = "_masked_out",
        [CORE_MASK_KEY] = "_mask_key",
        [CORE_PEEK] = "_peek",
    };
    speedups_state *state = PyModule_GetState(module);
    Py_ssize_t offsets[CORE_NSLOTS];
    int i;

    if (nargs != 2 || !PyType_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "bind_core() takes a class and its State.OPEN");
        return NULL;
    }
    for (i = 0; i < CORE_NSLOTS; i++) {
        PyObject *descr = PyObject_GetAttrString(args[0], slot_names[i]);
        if (descr == NULL) {
            return NULL;
        }
        if (!Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
                ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX ||
                (((PyMemberDescrObject *)descr)->d_member->flags & READONLY)) {
            PyErr_Format(PyExc_TypeError, "%R.%s is not a writable __slots__ entry", args[0],
                         slot_names[i]);
            Py_DECREF(descr);
            return NULL;
        }
        offsets[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
    }
#ifdef Py_GIL_DISABLED
    /* Without the GIL, reading and emptying the core's slots in place is
     * not safe against another thread: every call takes the Python path. */
    (void)offsets;
    Py_RETURN_NONE;
#endif
    memcpy(state->core_offsets, offsets, sizeof(offsets));
    Py_XSETREF(state->core_type, (PyTypeObject *)Py_NewRef(args[0]));
    Py_XSETREF(state->open_state, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------
 * The type.
 */

static int
conn_traverse(ConnectionBaseObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->core);
    Py_VISIT(self->transport);
    Py_VISIT(self->message_handler);
    Py_VISIT(self->scratch);
    Py_VISIT(self->waiter);
    Py_VISIT(self->queue);
    Py_VISIT(self->wake);
    Py_VISIT(self->loop);
    Py_VISIT(self->closed_exc);
    Py_VISIT(self->send_lock);
    return 0;
}

static int
conn_clear(ConnectionBaseObject *self)
{
    Py_CLEAR(self->core);
    Py_CLEAR(self->transport);
    Py_CLEAR(self->message_handler);
    Py_CLEAR(self->scratch);
    Py_CLEAR(self->waiter);
    Py_CLEAR(self->queue);
    Py_CLEAR(self->wake);
    Py_CLEAR(self->loop);
    Py_CLEAR(self->closed_exc);
    Py_CLEAR(self->send_lock);
    return 0;
}

static void
conn_dealloc(ConnectionBaseObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)conn_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

#define CONN_METHOD(name, fn, doc) \
    {name, (PyCFunction)(void (*)(void))fn, METH_METHOD | METH_FASTCALL | METH_KEYWORDS, doc}

static PyMethodDef conn_methods[] = {
    CONN_METHOD("get_buffer", conn_get_buffer, get_buffer_doc),
    CONN_METHOD("buffer_updated", conn_buffer_updated, buffer_updated_doc),
    CONN_METHOD("send_nowait", conn_send_nowait, send_nowait_doc),
    CONN_METHOD("recv", conn_recv, recv_doc),
    CONN_METHOD("send", conn_send, send_doc),
    {NULL, NULL, 0, NULL}
};

#define CONN_FIELD(name, field, doc) \
    {name, T_OBJECT, offsetof(ConnectionBaseObject, field), 0, doc}

static PyMemberDef conn_members[] = {
    CONN_FIELD("core", core, "The sans-I/O core (None until the handshake is done)."),
    CONN_FIELD("transport", transport, "The asyncio transport."),
    CONN_FIELD("_message_handler", message_handler, NULL),
    CONN_FIELD("_scratch", scratch, NULL),
    CONN_FIELD("_waiter", waiter, NULL),
    CONN_FIELD("_queue", queue, NULL),
    CONN_FIELD("_wake", wake, NULL),
    CONN_FIELD("_loop", loop, NULL),
    CONN_FIELD("_closed_exc", closed_exc, NULL),
    CONN_FIELD("_send_lock", send_lock, NULL),
    {"_lent", T_BOOL, offsetof(ConnectionBaseObject, lent), 0, NULL},
    {"_reading", T_BOOL, offsetof(ConnectionBaseObject, reading), 0, NULL},
    {"_write_paused", T_BOOL, offsetof(ConnectionBaseObject, write_paused), 0, NULL},
    {"_gathers", T_BOOL, offsetof(ConnectionBaseObject, gathers), 0, NULL},
    {NULL, 0, 0, 0, NULL}
};

PyDoc_STRVAR(conn_doc,
"The compiled per-message path of tether.aio.Connection (its base class\n"
"when the extension is built): get_buffer, buffer_updated, send_nowait,\n"
"recv and send.\n"
"Not for use on its own.");

static PyType_Slot conn_slots[] = {
    {Py_tp_dealloc, conn_dealloc},
    {Py_tp_traverse, conn_traverse},
    {Py_tp_clear, conn_clear},
    {Py_tp_methods, conn_methods},
    {Py_tp_members, conn_members},
    {Py_am_anext, conn_anext},
    {Py_tp_doc, (void *)conn_doc},
    {0, NULL}
};

static PyType_Spec conn_spec = {
    "tether._speedups.ConnectionBase",
    sizeof(ConnectionBaseObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    conn_slots,
};

int
tether_add_connection_base(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &conn_spec, NULL);
    if (type == NULL) {
        return -1;
    }
    if (PyModule_AddObject(module, "ConnectionBase", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}
