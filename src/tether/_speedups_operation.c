/* tether._speedups.Operation: what Connection.recv(), send(message) and
 * __anext__() (async for) return when the extension is built.
 *
 * An `async def` costs a Python frame and a coroutine object per call, and
 * every `await ws.recv()` or `await ws.send(m)` pays it. An Operation is a
 * coroutine without a frame: nothing runs until it is awaited (or driven by
 * a task), then its first step runs in C (tether_recv_start,
 * tether_send_start in _speedups_connection.c):
 *
 *   recv()  a queued message is returned at once; otherwise the connection
 *           gets a new Waiter and the Operation awaits it, as the frame of
 *           _py_recv would (yield it, then return its result);
 *   send()  a whole str or bytes message is written with send_nowait; a
 *           paused transport is then awaited through _drain().
 *
 * __anext__ is recv() whose normal close (ConnectionClosedOK) raises
 * StopAsyncIteration instead, ending `async for`.
 *
 * Anything else (closed, a close to commit, a concurrent recv(), fragments,
 * a bytes-like message) is delegated to the Python twin, _py_recv() or
 * _py_send(message): the Operation drives that coroutine as `await` would,
 * and the twin raises or waits as the case needs.
 *
 * It is a coroutine to asyncio (send, throw, close, __await__; registered as
 * collections.abc.Coroutine by tether.aio.connection), so create_task,
 * ensure_future, wait_for and run_coroutine_threadsafe accept it; one that
 * is dropped without being awaited or closed warns as a coroutine does.
 */

#include "_speedups.h"

enum { FRESH, RUNNING, FINISHED };

/* by enum operation_kind */
static const char *const kind_names[] = {"recv", "send", "__anext__"};

typedef struct {
    PyObject_HEAD
    PyObject *conn;
    PyObject *message; /* send()'s message, or NULL for recv() */
    PyObject *inner;   /* the awaitable it drives while RUNNING, or NULL */
    char state;
    char linked;       /* inner is the connection's recv() waiter */
    char kind;         /* enum operation_kind */
} OperationObject;

static speedups_state *
operation_state(OperationObject *self)
{
    return PyType_GetModuleState(Py_TYPE(self));
}

/* Done: as _py_recv's `finally`, the connection forgets the waiter. */
static void
finish(OperationObject *self)
{
    if (self->linked && self->inner != NULL && self->conn != NULL) {
        tether_recv_unlink(self->conn, self->inner);
    }
    self->linked = 0;
    self->state = FINISHED;
    Py_CLEAR(self->inner);
    Py_CLEAR(self->message);
    Py_CLEAR(self->conn);
}

/* Done with an exception raised: __anext__ turns a normal close
 * (ConnectionClosedOK) into StopAsyncIteration, ending `async for`. */
static PySendResult
failed(OperationObject *self)
{
    int kind = self->kind;
    finish(self);
    if (kind == OP_NEXT) {
        speedups_state *state = operation_state(self);
        if (state->closed_ok_type == NULL) {
            PyObject *exc = tether_fetch_exception();
            PyObject *module = PyImport_ImportModule("tether.exceptions");
            state->closed_ok_type =
                module != NULL ? PyObject_GetAttrString(module, "ConnectionClosedOK") : NULL;
            Py_XDECREF(module);
            if (state->closed_ok_type == NULL) {
                Py_XDECREF(exc);
                return PYGEN_ERROR;
            }
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        if (PyErr_ExceptionMatches(state->closed_ok_type)) {
            PyErr_SetNone(PyExc_StopAsyncIteration);
        }
    }
    return PYGEN_ERROR;
}

static PySendResult
operation_am_send(OperationObject *self, PyObject *arg, PyObject **presult)
{
    PyObject *inner;
    PySendResult rc;
    *presult = NULL;
    if (self->state == FINISHED) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return PYGEN_ERROR;
    }
    if (self->state == FRESH) {
        PyObject *out = NULL;
        int start;
        if (arg != Py_None) {
            PyErr_SetString(PyExc_TypeError,
                            "can't send non-None value to a just-started coroutine");
            return PYGEN_ERROR;
        }
        self->state = RUNNING;
        start = self->kind == OP_SEND
                    ? tether_send_start(operation_state(self), self->conn, self->message, &out)
                    : tether_recv_start(operation_state(self), self->conn, &out);
        if (start == START_DONE) {
            finish(self);
            *presult = out;
            return PYGEN_RETURN;
        }
        if (start == START_ERROR) {
            return failed(self);
        }
        self->inner = out;
        self->linked = start == START_WAIT;
    }
    if (self->inner == NULL) {
        /* resumed from inside its own first step */
        PyErr_SetString(PyExc_RuntimeError, "coroutine already executing");
        return PYGEN_ERROR;
    }
    inner = Py_NewRef(self->inner);
    rc = PyIter_Send(inner, arg, presult);
    if (rc != PYGEN_NEXT && self->inner == inner) {
        if (rc == PYGEN_ERROR) {
            failed(self);
        }
        else {
            finish(self);
        }
    }
    Py_DECREF(inner);
    return rc;
}

static PyObject *
operation_iternext(OperationObject *self)
{
    PyObject *value;
    PySendResult rc = operation_am_send(self, Py_None, &value);
    return tether_iternext_result(rc, value);
}

static PyObject *
operation_send(OperationObject *self, PyObject *arg)
{
    PyObject *value;
    PySendResult rc = operation_am_send(self, arg, &value);
    PyObject *r = tether_iternext_result(rc, value);
    if (r == NULL && !PyErr_Occurred()) {
        PyErr_SetNone(PyExc_StopIteration);
    }
    return r;
}

/* Raise what throw(typ[, val[, tb]]) was given, as a generator would. */
static PyObject *
raise_thrown(PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *typ = args[0];
    PyObject *val = nargs > 1 ? args[1] : Py_None;
    PyObject *tb = nargs > 2 ? args[2] : Py_None;
    if (tb != Py_None && !PyTraceBack_Check(tb)) {
        PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
        return NULL;
    }
    if (PyExceptionInstance_Check(typ)) {
        if (val != Py_None) {
            PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
            return NULL;
        }
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    }
    else if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, val);
    }
    else {
        PyErr_Format(PyExc_TypeError,
                     "exceptions must be classes or instances deriving from BaseException, "
                     "not %s", Py_TYPE(typ)->tp_name);
        return NULL;
    }
    if (tb != Py_None) {
        PyObject *type, *value, *old_tb;
        PyErr_Fetch(&type, &value, &old_tb);
        PyErr_NormalizeException(&type, &value, &old_tb);
        Py_XDECREF(old_tb);
        PyErr_Restore(type, value, Py_NewRef(tb));
    }
    return NULL;
}

/* throw(): into the coroutine it delegates to; else (a waiter, or not
 * started) the exception is raised here and the Operation is done. */
static PyObject *
operation_throw(OperationObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *inner = self->inner;
    if (nargs < 1 || nargs > 3) {
        PyErr_Format(PyExc_TypeError, "throw expected 1 to 3 arguments, got %zd", nargs);
        return NULL;
    }
    if (inner != NULL && !self->linked) {
        PyObject *stack[4] = {inner, args[0], nargs > 1 ? args[1] : NULL,
                              nargs > 2 ? args[2] : NULL};
        PyObject *r;
        Py_INCREF(inner);
        r = PyObject_VectorcallMethod(operation_state(self)->names[NAME_THROW], stack,
                                      (size_t)nargs + 1, NULL);
        Py_DECREF(inner);
        if (r == NULL) {
            failed(self);
        }
        return r;
    }
    /* A task throws the waiter's exception in (asyncio's Task.__wakeup gets
     * it from result()): a normal close still ends `async for`. */
    raise_thrown(args, nargs);
    failed(self);
    return NULL;
}

static PyObject *
operation_close(OperationObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *inner = self->inner;
    if (inner != NULL && !self->linked) {
        PyObject *r;
        Py_INCREF(inner);
        r = PyObject_VectorcallMethod(operation_state(self)->names[NAME_CLOSE], &inner,
                                      1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_DECREF(inner);
        finish(self);
        return r;
    }
    finish(self);
    Py_RETURN_NONE;
}

PyObject *
tether_operation_new(speedups_state *state, PyObject *conn, int kind, PyObject *message)
{
    OperationObject *self = PyObject_GC_New(OperationObject, state->operation_type);
    if (self == NULL) {
        return NULL;
    }
    self->conn = Py_NewRef(conn);
    self->message = Py_XNewRef(message);
    self->inner = NULL;
    self->state = FRESH;
    self->linked = 0;
    self->kind = (char)kind;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *
operation_self(PyObject *self)
{
    return Py_NewRef(self);
}

/* __name__ and __qualname__ (closure non-NULL), for a task's repr */
static PyObject *
operation_name(OperationObject *self, void *qualified)
{
    const char *name = kind_names[(int)self->kind];
    return qualified != NULL ? PyUnicode_FromFormat("Connection.%s", name)
                             : PyUnicode_FromString(name);
}

static PyGetSetDef operation_getset[] = {
    {"__name__", (getter)operation_name, NULL, NULL, NULL},
    {"__qualname__", (getter)operation_name, NULL, NULL, "qualified"},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyObject *
operation_repr(OperationObject *self)
{
    static const char *const states[] = {"not started", "running", "finished"};
    return PyUnicode_FromFormat("<%s %s>", Py_TYPE(self)->tp_name, states[(int)self->state]);
}

static int
operation_traverse(OperationObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->conn);
    Py_VISIT(self->message);
    Py_VISIT(self->inner);
    return 0;
}

static int
operation_clear(OperationObject *self)
{
    Py_CLEAR(self->conn);
    Py_CLEAR(self->message);
    Py_CLEAR(self->inner);
    return 0;
}

/* As a coroutine's finalizer: one never awaited (nor closed) warns, and an
 * abandoned recv() makes the connection forget its waiter. */
static void
operation_finalize(OperationObject *self)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (self->state == FRESH) {
        self->state = FINISHED;
        if (PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                             "coroutine 'Connection.%s' was never awaited",
                             kind_names[(int)self->kind]) < 0) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
    }
    if (self->linked) {
        finish(self);
    }
    PyErr_Restore(type, value, tb);
}

static void
operation_dealloc(OperationObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0) {
        return; /* resurrected */
    }
    PyObject_GC_UnTrack(self);
    (void)operation_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef operation_methods[] = {
    {"send", (PyCFunction)operation_send, METH_O,
     "send(value): resume; raise StopIteration(result) when done."},
    {"throw", (PyCFunction)(void (*)(void))operation_throw, METH_FASTCALL,
     "throw(exc): raise exc at the point of waiting."},
    {"close", (PyCFunction)operation_close, METH_NOARGS,
     "Stop waiting (the connection forgets a recv() waiter)."},
    {NULL, NULL, 0, NULL}
};

PyDoc_STRVAR(operation_doc,
"What Connection.recv() and send(message) return: a coroutine without a\n"
"Python frame. Await it (or pass it to asyncio.create_task).");

static PyType_Slot operation_slots[] = {
    {Py_tp_dealloc, operation_dealloc},
    {Py_tp_finalize, operation_finalize},
    {Py_tp_traverse, operation_traverse},
    {Py_tp_clear, operation_clear},
    {Py_tp_repr, operation_repr},
    {Py_tp_methods, operation_methods},
    {Py_tp_getset, operation_getset},
    {Py_tp_iternext, operation_iternext},
    {Py_am_await, operation_self},
    {Py_am_send, operation_am_send},
    {Py_tp_doc, (void *)operation_doc},
    {0, NULL}
};

static PyType_Spec operation_spec = {
    "tether._speedups.Operation",
    sizeof(OperationObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    operation_slots,
};

int
tether_add_operation(PyObject *module, speedups_state *state)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &operation_spec, NULL);
    if (type == NULL) {
        return -1;
    }
    state->operation_type = (PyTypeObject *)Py_NewRef(type);
    if (PyModule_AddObject(module, "Operation", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}
