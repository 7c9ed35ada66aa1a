/* tether._speedups.Waiter: the compiled twin of tether.aio.waiter.PyWaiter,
 * the future that Connection.recv() waits on.
 *
 * asyncio wakes a task whose future is done on the loop's next turn (the
 * future's set_result schedules the task's step with call_soon). A Waiter is
 * completed with resolve() while the connection handles a read, and woken
 * with wake() when the read is handled: the task's step runs there and then,
 * in the read's callback, when its wake-up is the only callback, no task is
 * running on the loop, and the loop is asyncio's own. Otherwise the
 * callbacks go through call_soon, as asyncio's future does. tether/aio/waiter.py says why; the two must behave
 * alike (the test suite runs against both).
 *
 * What a task and asyncio ask of a future is here: get_loop,
 * add_done_callback (with context=), remove_done_callback, cancel(msg=),
 * result, exception, done, cancelled, _asyncio_future_blocking, and await
 * (the object is its own iterator: it yields itself once, then returns the
 * result).
 */

#include "_speedups.h"

#include <stddef.h>

enum { PENDING, DONE, CANCELLED };

typedef struct {
    PyObject_HEAD
    PyObject *loop;
    PyObject *result;
    PyObject *exception;  /* set_exception(), or NULL */
    PyObject *cancel_msg; /* cancel(msg), or NULL */
    PyObject *fn;         /* the first callback and its context, or NULL */
    PyObject *context;
    PyObject *more;       /* further (fn, context) tuples: a list, or NULL */
    char state;
    char blocking;        /* _asyncio_future_blocking */
    char yielded;         /* await has yielded the waiter once */
} WaiterObject;

static speedups_state *
waiter_state(PyObject *self)
{
    return PyType_GetModuleState(Py_TYPE(self));
}

int
tether_is_waiter(speedups_state *state, PyObject *obj)
{
    return state->waiter_type != NULL && Py_IS_TYPE(obj, state->waiter_type);
}

/* loop.call_soon(fn, self, context=context) */
static int
call_soon(speedups_state *state, WaiterObject *self, PyObject *fn, PyObject *context)
{
    PyObject *args[4] = {self->loop, fn, (PyObject *)self, context};
    PyObject *r = PyObject_VectorcallMethod(state->names[NAME_CALL_SOON], args,
                                            3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                            state->kw_context);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* Hand every callback to call_soon, in the order they were added. */
static int
schedule(speedups_state *state, WaiterObject *self)
{
    PyObject *fn = self->fn, *context = self->context, *more = self->more;
    Py_ssize_t i;
    int rc = 0;
    self->fn = self->context = self->more = NULL;
    if (fn != NULL) {
        rc = call_soon(state, self, fn, context);
        Py_DECREF(fn);
        Py_DECREF(context);
    }
    if (more != NULL) {
        for (i = 0; rc == 0 && i < PyList_GET_SIZE(more); i++) {
            PyObject *entry = PyList_GET_ITEM(more, i);
            rc = call_soon(state, self, PyTuple_GET_ITEM(entry, 0), PyTuple_GET_ITEM(entry, 1));
        }
        Py_DECREF(more);
    }
    return rc;
}

/* asyncio.Task, and the running tasks by loop: the dict
 * asyncio.tasks._current_tasks where there is one (Python 3.11's
 * current_task() is a Python function around it), else current_task.
 * Imported on first use: the sans-I/O layer that shares this module does not
 * need asyncio. */
static int
load_asyncio(speedups_state *state)
{
    PyObject *asyncio, *tasks;
    if (state->task_type != NULL) {
        return 0;
    }
    asyncio = PyImport_ImportModule("asyncio.tasks");
    if (asyncio == NULL) {
        return -1;
    }
    tasks = PyObject_GetAttrString(asyncio, "_current_tasks");
    if (tasks == NULL || !PyDict_CheckExact(tasks)) {
        PyErr_Clear();
        Py_XDECREF(tasks);
        tasks = PyObject_GetAttrString(asyncio, "current_task");
    }
    state->task_type = PyObject_GetAttrString(asyncio, "Task");
    state->current_task = tasks;
    Py_DECREF(asyncio);
    asyncio = PyImport_ImportModule("asyncio.base_events");
    state->base_loop_type =
        asyncio != NULL ? PyObject_GetAttrString(asyncio, "BaseEventLoop") : NULL;
    Py_XDECREF(asyncio);
    if (state->task_type == NULL || state->current_task == NULL ||
            state->base_loop_type == NULL || !PyType_Check(state->task_type) ||
            !PyType_Check(state->base_loop_type)) {
        Py_CLEAR(state->task_type);
        Py_CLEAR(state->current_task);
        Py_CLEAR(state->base_loop_type);
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "asyncio.Task is not a class");
        }
        return -1;
    }
    return 0;
}

/* Whether fn is a task's wake-up: a method (compiled or Python) bound to an
 * asyncio.Task. */
static int
is_task_wakeup(speedups_state *state, PyObject *fn)
{
    PyObject *bound = NULL;
    if (PyCFunction_Check(fn)) {
        bound = PyCFunction_GET_SELF(fn);
    }
    else if (PyMethod_Check(fn)) {
        bound = PyMethod_GET_SELF(fn);
    }
    return bound != NULL && PyObject_TypeCheck(bound, (PyTypeObject *)state->task_type);
}

/* As PyWaiter.wake: 0, or -1 with an exception (SystemExit and
 * KeyboardInterrupt from the task's step, or a failure to schedule). */
int
tether_waiter_wake(speedups_state *state, PyObject *obj)
{
    WaiterObject *self = (WaiterObject *)obj;
    PyObject *fn = self->fn, *context = self->context, *current, *r;
    int idle;

    if (fn == NULL || (self->more != NULL && PyList_GET_SIZE(self->more) > 0)) {
        return schedule(state, self);
    }
    if (load_asyncio(state) < 0 || !is_task_wakeup(state, fn) ||
            !PyObject_TypeCheck(self->loop, (PyTypeObject *)state->base_loop_type)) {
        PyErr_Clear();
        return schedule(state, self);
    }
    if (PyDict_CheckExact(state->current_task)) {
        current = PyDict_GetItemWithError(state->current_task, self->loop);
        if (current == NULL && PyErr_Occurred()) {
            return -1;
        }
        idle = current == NULL;
    }
    else {
        current = PyObject_CallOneArg(state->current_task, self->loop);
        if (current == NULL) {
            return -1;
        }
        idle = current == Py_None;
        Py_DECREF(current);
    }
    if (!idle || !PyContext_CheckExact(context) || PyContext_Enter(context) < 0) {
        PyErr_Clear();
        return schedule(state, self);
    }
    self->fn = self->context = NULL; /* their references are ours */
    Py_CLEAR(self->more);
    r = PyObject_CallOneArg(fn, obj);
    if (PyContext_Exit(context) < 0) {
        Py_XDECREF(r);
        r = NULL;
    }
    if (r != NULL) {
        Py_DECREF(r);
    }
    else if (!PyErr_ExceptionMatches(PyExc_SystemExit) &&
             !PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        /* As asyncio.Handle._run: the loop's exception handler hears of it. */
        PyObject *value = tether_fetch_exception(), *report = NULL, *message;
        message = PyUnicode_FromFormat("Exception in callback %R", fn);
        if (message != NULL) {
            report = Py_BuildValue("{sOsOsO}", "message", message, "exception", value, "future",
                                   obj);
            Py_DECREF(message);
        }
        if (report != NULL) {
            PyObject *args[2] = {self->loop, report};
            r = PyObject_VectorcallMethod(state->names[NAME_CALL_EXCEPTION_HANDLER], args,
                                          2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            Py_DECREF(report);
        }
        Py_XDECREF(value);
        Py_DECREF(fn);
        Py_DECREF(context);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
        return 0;
    }
    Py_DECREF(fn);
    Py_DECREF(context);
    return r == NULL ? -1 : 0;
}

int
tether_waiter_resolve(PyObject *obj, PyObject *result)
{
    WaiterObject *self = (WaiterObject *)obj;
    if (self->state != PENDING) {
        return 0;
    }
    self->state = DONE;
    Py_XSETREF(self->result, Py_NewRef(result));
    return 1;
}

/* ------------------------------------------------------------------------
 * Methods
 */

/* Raise asyncio.<name>(arg), or asyncio.<name>() when arg is NULL; returns
 * NULL. */
static PyObject *
raise_asyncio_error(const char *name, PyObject *arg)
{
    PyObject *asyncio = PyImport_ImportModule("asyncio");
    PyObject *cls = asyncio != NULL ? PyObject_GetAttrString(asyncio, name) : NULL;
    PyObject *exc;
    Py_XDECREF(asyncio);
    if (cls == NULL) {
        return NULL;
    }
    exc = arg != NULL ? PyObject_CallOneArg(cls, arg) : PyObject_CallNoArgs(cls);
    if (exc != NULL) {
        PyErr_SetObject(cls, exc);
        Py_DECREF(exc);
    }
    Py_DECREF(cls);
    return NULL;
}

static PyObject *
invalid_state(const char *message)
{
    PyObject *text = PyUnicode_FromString(message);
    if (text != NULL) {
        raise_asyncio_error("InvalidStateError", text);
        Py_DECREF(text);
    }
    return NULL;
}

/* CancelledError(msg), or CancelledError() when cancel() had no message. */
#define raise_cancelled(self) raise_asyncio_error("CancelledError", (self)->cancel_msg)

/* The result (new reference), or NULL with the waiter's exception raised. */
static PyObject *
get_result(WaiterObject *self)
{
    if (self->state == CANCELLED) {
        return raise_cancelled(self);
    }
    if (self->state == PENDING) {
        return invalid_state("Result is not ready.");
    }
    if (self->exception != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(self->exception), self->exception);
        return NULL;
    }
    return Py_NewRef(self->result != NULL ? self->result : Py_None);
}

static PyObject *
waiter_result(WaiterObject *self, PyObject *Py_UNUSED(ignored))
{
    return get_result(self);
}

static PyObject *
waiter_exception(WaiterObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->state == CANCELLED) {
        return raise_cancelled(self);
    }
    if (self->state == PENDING) {
        return invalid_state("Exception is not set.");
    }
    return Py_NewRef(self->exception != NULL ? self->exception : Py_None);
}

static PyObject *
waiter_done(WaiterObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->state != PENDING);
}

static PyObject *
waiter_cancelled(WaiterObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->state == CANCELLED);
}

static PyObject *
waiter_get_loop(WaiterObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self->loop);
}

static PyObject *
waiter_add_done_callback(WaiterObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    speedups_state *state = waiter_state((PyObject *)self);
    PyObject *fn, *context = NULL;
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    int rc = 0;

    if (nargs != 1 || nkw > 1 ||
            (nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0),
                                                          "context") != 0)) {
        PyErr_SetString(PyExc_TypeError,
                        "add_done_callback() takes a callback and an optional context=");
        return NULL;
    }
    fn = args[0];
    if (nkw == 1 && args[1] != Py_None) {
        context = Py_NewRef(args[1]);
    }
    else {
        context = PyContext_CopyCurrent();
        if (context == NULL) {
            return NULL;
        }
    }
    if (self->state != PENDING) {
        rc = call_soon(state, self, fn, context);
        Py_DECREF(context);
    }
    else if (self->fn == NULL && self->more == NULL) {
        self->fn = Py_NewRef(fn);
        self->context = context;
    }
    else {
        PyObject *entry = PyTuple_Pack(2, fn, context);
        Py_DECREF(context);
        if (entry == NULL) {
            return NULL;
        }
        if (self->more == NULL && (self->more = PyList_New(0)) == NULL) {
            rc = -1;
        }
        else {
            rc = PyList_Append(self->more, entry);
        }
        Py_DECREF(entry);
    }
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
waiter_remove_done_callback(WaiterObject *self, PyObject *fn)
{
    Py_ssize_t removed = 0, i;
    int eq;
    if (self->fn != NULL) {
        eq = PyObject_RichCompareBool(self->fn, fn, Py_EQ);
        if (eq < 0) {
            return NULL;
        }
        if (eq) {
            Py_CLEAR(self->fn);
            Py_CLEAR(self->context);
            removed++;
        }
    }
    if (self->more != NULL) {
        PyObject *kept = PyList_New(0);
        if (kept == NULL) {
            return NULL;
        }
        for (i = 0; i < PyList_GET_SIZE(self->more); i++) {
            PyObject *entry = PyList_GET_ITEM(self->more, i);
            eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(entry, 0), fn, Py_EQ);
            if (eq < 0 || (!eq && PyList_Append(kept, entry) < 0)) {
                Py_DECREF(kept);
                return NULL;
            }
            removed += eq;
        }
        Py_SETREF(self->more, kept);
    }
    return PyLong_FromSsize_t(removed);
}

static PyObject *
waiter_cancel(WaiterObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *msg;
    if (nargs + nkw > 1 ||
            (nkw == 1 &&
             PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "msg") != 0)) {
        PyErr_SetString(PyExc_TypeError, "cancel() takes an optional msg");
        return NULL;
    }
    if (self->state != PENDING) {
        Py_RETURN_FALSE;
    }
    msg = nargs + nkw == 1 ? args[0] : Py_None;
    self->state = CANCELLED;
    Py_XSETREF(self->cancel_msg, msg == Py_None ? NULL : Py_NewRef(msg));
    if (schedule(waiter_state((PyObject *)self), self) < 0) {
        return NULL;
    }
    Py_RETURN_TRUE;
}

static PyObject *
waiter_resolve(WaiterObject *self, PyObject *result)
{
    return PyBool_FromLong(tether_waiter_resolve((PyObject *)self, result));
}

static PyObject *
waiter_set_result(WaiterObject *self, PyObject *result)
{
    if (!tether_waiter_resolve((PyObject *)self, result)) {
        return invalid_state("invalid state: the waiter is done");
    }
    if (schedule(waiter_state((PyObject *)self), self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
waiter_set_exception(WaiterObject *self, PyObject *exception)
{
    if (self->state != PENDING) {
        return invalid_state("invalid state: the waiter is done");
    }
    if (!PyExceptionInstance_Check(exception)) {
        PyErr_SetString(PyExc_TypeError, "set_exception() takes an exception instance");
        return NULL;
    }
    self->state = DONE;
    Py_XSETREF(self->exception, Py_NewRef(exception));
    if (schedule(waiter_state((PyObject *)self), self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
waiter_wake(WaiterObject *self, PyObject *Py_UNUSED(ignored))
{
    if (tether_waiter_wake(waiter_state((PyObject *)self), (PyObject *)self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* await: yield the waiter once (a task then waits for it), then return its
 * result. am_send serves the interpreter; tp_iternext anything else. */
static PySendResult
waiter_am_send(WaiterObject *self, PyObject *Py_UNUSED(arg), PyObject **presult)
{
    if (self->state == PENDING) {
        if (!self->yielded) {
            self->yielded = 1;
            self->blocking = 1;
            *presult = Py_NewRef(self);
            return PYGEN_NEXT;
        }
        PyErr_SetString(PyExc_RuntimeError, "await wasn't used with future");
        *presult = NULL;
        return PYGEN_ERROR;
    }
    *presult = get_result(self);
    return *presult != NULL ? PYGEN_RETURN : PYGEN_ERROR;
}

static PyObject *
waiter_iternext(WaiterObject *self)
{
    PyObject *value;
    PySendResult rc = waiter_am_send(self, Py_None, &value);
    return tether_iternext_result(rc, value);
}

static PyObject *
waiter_get_blocking(WaiterObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->blocking);
}

static int
waiter_set_blocking(WaiterObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    int truth;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete _asyncio_future_blocking");
        return -1;
    }
    truth = PyObject_IsTrue(value);
    if (truth < 0) {
        return -1;
    }
    self->blocking = (char)truth;
    return 0;
}

PyObject *
tether_waiter_new(speedups_state *state, PyObject *loop)
{
    WaiterObject *self = PyObject_GC_New(WaiterObject, state->waiter_type);
    if (self == NULL) {
        return NULL;
    }
    self->loop = Py_NewRef(loop);
    self->result = self->exception = self->cancel_msg = NULL;
    self->fn = self->context = self->more = NULL;
    self->state = PENDING;
    self->blocking = self->yielded = 0;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

int
tether_waiter_done(PyObject *waiter)
{
    return ((WaiterObject *)waiter)->state != PENDING;
}

static PyObject *
waiter_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *loop;
    WaiterObject *self;
    static char *kwlist[] = {"loop", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Waiter", kwlist, &loop)) {
        return NULL;
    }
    self = (WaiterObject *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->loop = Py_NewRef(loop);
    }
    return (PyObject *)self;
}

static PyObject *
waiter_repr(WaiterObject *self)
{
    static const char *const names[] = {"pending", "finished", "cancelled"};
    return PyUnicode_FromFormat("<%s %s>", Py_TYPE(self)->tp_name, names[(int)self->state]);
}

static int
waiter_traverse(WaiterObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->loop);
    Py_VISIT(self->result);
    Py_VISIT(self->exception);
    Py_VISIT(self->cancel_msg);
    Py_VISIT(self->fn);
    Py_VISIT(self->context);
    Py_VISIT(self->more);
    return 0;
}

static int
waiter_clear(WaiterObject *self)
{
    Py_CLEAR(self->loop);
    Py_CLEAR(self->result);
    Py_CLEAR(self->exception);
    Py_CLEAR(self->cancel_msg);
    Py_CLEAR(self->fn);
    Py_CLEAR(self->context);
    Py_CLEAR(self->more);
    return 0;
}

static void
waiter_dealloc(WaiterObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)waiter_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyObject *
waiter_self(PyObject *self)
{
    return Py_NewRef(self);
}

static PyMethodDef waiter_methods[] = {
    {"get_loop", (PyCFunction)waiter_get_loop, METH_NOARGS, NULL},
    {"done", (PyCFunction)waiter_done, METH_NOARGS, NULL},
    {"cancelled", (PyCFunction)waiter_cancelled, METH_NOARGS, NULL},
    {"result", (PyCFunction)waiter_result, METH_NOARGS,
     "The message, or raise what the waiter was completed with."},
    {"exception", (PyCFunction)waiter_exception, METH_NOARGS, NULL},
    {"add_done_callback", (PyCFunction)(void (*)(void))waiter_add_done_callback,
     METH_FASTCALL | METH_KEYWORDS, NULL},
    {"remove_done_callback", (PyCFunction)waiter_remove_done_callback, METH_O, NULL},
    {"cancel", (PyCFunction)(void (*)(void))waiter_cancel, METH_FASTCALL | METH_KEYWORDS,
     "Cancel the wait (Task.cancel() calls this); False once done."},
    {"resolve", (PyCFunction)waiter_resolve, METH_O,
     "Complete with result without waking anyone yet: call wake() next.\n"
     "False (and nothing changes) if already done."},
    {"set_result", (PyCFunction)waiter_set_result, METH_O, NULL},
    {"set_exception", (PyCFunction)waiter_set_exception, METH_O, NULL},
    {"wake", (PyCFunction)waiter_wake, METH_NOARGS,
     "Run the waiting task's step now if it is the only callback, no task\n"
     "is running and the loop is asyncio's; otherwise schedule the callbacks."},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef waiter_getset[] = {
    {"_asyncio_future_blocking", (getter)waiter_get_blocking, (setter)waiter_set_blocking,
     "asyncio's marker of a future that a task may wait on.", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

PyDoc_STRVAR(waiter_doc,
"Waiter(loop)\n--\n\n"
"A one-shot future for one recv(), woken in the read that completes it\n"
"(see tether.aio.waiter). The connection calls resolve() then wake(), or\n"
"set_result() / set_exception(); the awaiting task uses the rest.");

static PyType_Slot waiter_slots[] = {
    {Py_tp_new, waiter_new},
    {Py_tp_dealloc, waiter_dealloc},
    {Py_tp_traverse, waiter_traverse},
    {Py_tp_clear, waiter_clear},
    {Py_tp_repr, waiter_repr},
    {Py_tp_methods, waiter_methods},
    {Py_tp_getset, waiter_getset},
    {Py_tp_iter, waiter_self},
    {Py_tp_iternext, waiter_iternext},
    {Py_am_await, waiter_self},
    {Py_am_send, waiter_am_send},
    {Py_tp_doc, (void *)waiter_doc},
    {0, NULL}
};

static PyType_Spec waiter_spec = {
    "tether._speedups.Waiter",
    sizeof(WaiterObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    waiter_slots,
};

int
tether_add_waiter(PyObject *module, speedups_state *state)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &waiter_spec, NULL);
    if (type == NULL) {
        return -1;
    }
    state->waiter_type = (PyTypeObject *)Py_NewRef(type);
    state->kw_context = Py_BuildValue("(s)", "context");
    if (state->kw_context == NULL || PyModule_AddObject(module, "Waiter", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}
