/* tether._transport: compiled TCP transports for asyncio event loops
 * (Linux; asyncio's selector loop and uvloop, anything with add_reader).
 *
 * asyncio's own transports register every socket with the loop's selector:
 * one Handle and one SelectorKey per connection, and a trip through
 * selectors.py, _process_events and Handle._run for every readiness event.
 * Here the sockets of a loop share one epoll instance of their own (a
 * Poller); the loop watches only that epoll descriptor (epoll instances are
 * pollable), and one C callback reads every ready socket:
 *
 *   Poller(loop)                      one per event loop (transports.py)
 *   Listener(poller, fd, factory)     accepts with accept4(), makes a
 *                                     Transport per connection and calls
 *                                     protocol.connection_made() at once;
 *                                     the loop watches its socket itself
 *   Transport(poller, fd, protocol)   asyncio.Transport's methods over a
 *                                     connected socket it owns
 *
 * Protocols are asyncio.BufferedProtocol (get_buffer/buffer_updated, one
 * recv_into per readiness event) or asyncio.Protocol (data_received).
 * Semantics follow asyncio's _SelectorSocketTransport: what the kernel does
 * not take waits for EPOLLOUT; the protocol's pause_writing() and
 * resume_writing() follow the high/low water marks; connection_lost() is
 * called from the loop (call_soon), never from inside close() or abort().
 * Two differences, for speed. Small writes made while the poller dispatches
 * several connections, or after a first send in the same turn of the loop,
 * are gathered and leave together (see CORK_WRITE_MAX). A loop whose poller
 * holds one connection (a client, or a server with one client) watches that
 * socket itself, not the epoll set (poller_rewatch). An idle connection
 * costs the Transport object alone: no per-connection buffer, Handle or key.
 *
 * What to call next: nothing here directly; tether/aio/transports.py wraps
 * it as create_server() and create_connection().
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifdef __linux__

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

/* Readiness events taken per epoll_wait() from one loop callback: more stay
 * pending (level-triggered) and come back on the loop's next iteration, so
 * one busy poller cannot starve the loop's other callbacks. */
#define MAX_EVENTS 128
/* Buffers handed to one writev(). */
#define MAX_IOV 64
#define DEFAULT_HIGH_WATER (64 * 1024)
/* Writes made while the poller dispatches a batch of several connections
 * (echoes, a broadcast), and the writes that follow a first one in the same
 * turn of the loop (a burst of replies to one read), are gathered and sent
 * once the batch is done, one send() per connection instead of one per
 * write(). Writes from this size on, or a gathered queue past CORK_MAX, go
 * out at once. */
#define CORK_WRITE_MAX (16 * 1024)
#define CORK_MAX (64 * 1024)
/* The most a protocol may ask the kernel to hold back a wake-up for
 * (Transport.set_read_low_water): a read's worth of the shared buffer. */
#define LOWAT_MAX (256 * 1024)

typedef struct {
    PyObject_HEAD
    PyObject *loop;      /* strong while epfd >= 0 */
    PyObject *poll_cb;   /* bound self._poll, given to loop.add_reader */
    PyObject *graveyard; /* objects unregistered while dispatching */
    PyObject *corked;    /* transports with writes gathered in this batch */
    int epfd;
    int dispatching;
    int flush_scheduled;    /* flush_cb is in the loop's ready queue */
    PyObject *flush_cb;     /* bound self._flush, for loop.call_soon */
    unsigned long long turn; /* advances with every dispatch and every flush */
    Py_ssize_t registered; /* objects in the epoll set */
    Py_ssize_t attached;   /* open transports and listeners */
    void *solo;            /* the one registered object, when known (borrowed) */
    int batch;             /* ready objects in the dispatch under way */
    int watched;           /* the descriptor the loop watches for us: epfd, a
                              lone Transport's socket, or -1: none
                              (listeners are watched apart, listener_watch) */
} Poller;

/* Common head of what a poller dispatches to. */
typedef struct {
    PyObject_HEAD
    Poller *poller;
    int fd;
    uint32_t events; /* registered epoll events; 0: not registered */
    int in_poller;   /* holds a reference from the poller */
    int attached;    /* counted in poller->attached */
} Pollable;

typedef struct {
    PyObject_HEAD
    Poller *poller;
    int fd;
    uint32_t events;
    int in_poller;
    int attached;
    PyObject *protocol;
    PyObject *pending;   /* list of bytes waiting for EPOLLOUT, or NULL */
    PyObject *sock;      /* socket.socket made by get_extra_info("socket") */
    Py_ssize_t head_off; /* bytes of pending[0] already sent */
    Py_ssize_t buffered; /* bytes in pending, minus head_off */
    Py_ssize_t gathered; /* of which gathered, not yet offered to the kernel */
    Py_ssize_t high_water, low_water;
    unsigned closing : 1;
    unsigned reading_paused : 1;
    unsigned protocol_paused : 1;
    unsigned eof_pending : 1;
    unsigned eof_sent : 1;
    unsigned lost_scheduled : 1;
    unsigned buffered_protocol : 1;
    unsigned at_eof : 1; /* the peer's FIN was read: nothing more to read */
    unsigned corked : 1; /* in poller->corked: flushed when the batch ends */
    unsigned lowat_req : 19; /* set_read_low_water() during this read (<= LOWAT_MAX) */
    int lowat;               /* SO_RCVLOWAT in force; 0: the kernel's default, 1 */
    unsigned long long write_turn; /* poller->turn of the last direct send */
    PyObject *peername, *sockname; /* read when the transport starts */
} Transport;

/* Something is queued (waiting for EPOLLOUT, or gathered). */
static inline int
has_pending(Transport *t)
{
    return t->pending != NULL && PyList_GET_SIZE(t->pending) > 0;
}

typedef struct {
    PyObject_HEAD
    Poller *poller;
    int fd;
    uint32_t events;
    int in_poller;
    int attached;
    PyObject *factory;
    int backlog;
    int nodelay;
    int paused;
} Listener;
/* A listener is never in the epoll set: the loop watches its socket with
 * loop.add_reader(fd, listener._accept) (listener_watch), so that the set
 * holds connections only and a server's lone connection can be watched
 * directly (poller_rewatch). `events` is EPOLLIN while the loop watches it,
 * `in_poller` stays 0. */

static PyTypeObject Poller_Type, Transport_Type, Listener_Type;

/* A non-blocking call that found nothing to do now (or was interrupted). */
static inline int
would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

/* PyErr_GetRaisedException/SetRaisedException, which Python 3.11 lacks. */
static PyObject *
fetch_exc(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

static void
restore_exc(PyObject *exc)
{
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
}

/* Interned method names. */
static PyObject *s_get_buffer, *s_buffer_updated, *s_data_received,
    *s_eof_received, *s_connection_lost, *s_connection_made, *s_pause_writing,
    *s_resume_writing, *s_call_soon, *s_call_later, *s_add_reader,
    *s_remove_reader, *s_call_exception_handler, *s_call_connection_lost,
    *s_resume_accepting, *s_accept;
static PyObject *socket_socket; /* socket.socket */

/* ------------------------------------------------------------------------
 * Poller
 */

/* loop.add_reader(fd, self._poll) or loop.remove_reader(fd): 0, or -1 with
 * an exception set. */
static int
loop_watch(Poller *self, PyObject *method, int fd)
{
    PyObject *num = PyLong_FromLong(fd);
    PyObject *r = num == NULL ? NULL
                  : method == s_add_reader
                      ? PyObject_CallMethodObjArgs(self->loop, method, num, self->poll_cb, NULL)
                      : PyObject_CallMethodObjArgs(self->loop, method, num, NULL);
    Py_XDECREF(num);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static int
poller_open(Poller *self)
{
    if (self->epfd >= 0)
        return 0;
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (loop_watch(self, s_add_reader, epfd) < 0) {
        close(epfd);
        return -1;
    }
    self->epfd = epfd;
    self->watched = epfd;
    return 0;
}

/* The last transport or listener is gone: give the descriptor back to the
 * system and stop watching it, so a loop that closes later leaks nothing. */
static void
poller_shut(Poller *self)
{
    if (self->epfd < 0 || self->attached > 0 || self->dispatching)
        return;
    /* Called from connection_lost() paths and from deallocators: keep an
     * exception already in flight. */
    PyObject *exc = PyErr_Occurred() ? fetch_exc() : NULL;
    PyObject *loop = self->loop;
    if (loop != NULL) {
        PyObject *closed = PyObject_CallMethod(loop, "is_closed", NULL);
        int is_closed = closed == NULL ? -1 : PyObject_IsTrue(closed);
        Py_XDECREF(closed);
        if (is_closed == 0 && self->watched >= 0) {
            if (loop_watch(self, s_remove_reader, self->watched) < 0)
                PyErr_WriteUnraisable((PyObject *)self);
        }
        else {
            /* a closed (or half torn-down) loop watches nothing any more */
            PyErr_Clear();
        }
    }
    close(self->epfd);
    self->epfd = -1;
    self->watched = -1;
    if (exc != NULL)
        restore_exc(exc);
}

/* Which descriptor the loop watches. A client's connection is most often
 * the only socket of its loop's poller: then the loop watches that socket
 * itself, not the epoll set holding it. Waking a process through an epoll
 * set nested in the loop's own costs the kernel a second wake-up callback and
 * a poll of the inner set on every wait; a sequential client measured 2-3%
 * more round trips a second without it. The socket stays in the set, so
 * going back (a second socket, a wait for EPOLLOUT, a pause) changes only
 * what the loop watches. Listeners are not in the set (listener_watch), so
 * a server with one connection takes this path too. Failures (a closed
 * loop) are not raised: the callers are closing paths and state changes
 * that the epoll set already holds. */
static void
poller_rewatch(Poller *p)
{
    Pollable *solo = (Pollable *)p->solo;
    if (p->epfd < 0)
        return;
    /* a socket leaves the set (and the watch) before it closes, so no other
     * socket can have the watched number meanwhile */
    int fd = p->registered == 1 && solo != NULL && solo->events == EPOLLIN &&
                     Py_IS_TYPE(solo, &Transport_Type)
                 ? solo->fd
                 : p->epfd;
    if (fd == p->watched)
        return;
    PyObject *exc = PyErr_Occurred() ? fetch_exc() : NULL;
    if (p->watched >= 0 && loop_watch(p, s_remove_reader, p->watched) < 0)
        PyErr_Clear(); /* a closed loop watches nothing any more */
    p->watched = -1;
    if (loop_watch(p, s_add_reader, fd) == 0) {
        p->watched = fd;
    }
    else {
        PyErr_Clear();
        /* the socket refused: the set, as before; a closed loop refuses
         * both and watches nothing any more */
        if (fd != p->epfd && loop_watch(p, s_add_reader, p->epfd) == 0)
            p->watched = p->epfd;
        else
            PyErr_Clear();
    }
    if (exc != NULL)
        restore_exc(exc);
}

static int
pollable_attach(Pollable *obj)
{
    if (obj->attached)
        return 0;
    if (poller_open(obj->poller) < 0)
        return -1;
    obj->attached = 1;
    obj->poller->attached++;
    return 0;
}

static int pollable_set_events(Pollable *obj, uint32_t events);

static void
pollable_detach(Pollable *obj)
{
    if (!obj->attached)
        return;
    if (pollable_set_events(obj, 0) < 0)
        PyErr_WriteUnraisable((PyObject *)obj);
    obj->attached = 0;
    obj->poller->attached--;
    poller_shut(obj->poller);
}

static int
pollable_set_events(Pollable *obj, uint32_t events)
{
    Poller *p = obj->poller;
    if (events == obj->events)
        return 0;
    struct epoll_event ev;
    ev.events = events;
    ev.data.ptr = obj;
    if (obj->events == 0) {
        if (!obj->attached || p->epfd < 0) {
            PyErr_SetString(PyExc_RuntimeError, "the socket is not attached to its poller");
            return -1;
        }
        if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, obj->fd, &ev) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (!obj->in_poller) {
            Py_INCREF(obj);
            obj->in_poller = 1;
            p->registered++;
            p->solo = p->registered == 1 ? obj : NULL;
        }
    }
    else if (events == 0) {
        epoll_ctl(p->epfd, EPOLL_CTL_DEL, obj->fd, &ev);
    }
    else if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, obj->fd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    obj->events = events;
    if (events == 0 && obj->in_poller) {
        obj->in_poller = 0;
        p->registered--;
        /* which one is left alone is learnt from the next epoll_wait() */
        p->solo = NULL;
        if (p->dispatching) {
            /* events[] of the batch being dispatched may still point at it */
            int rc = PyList_Append(p->graveyard, (PyObject *)obj);
            Py_DECREF(obj);
            if (rc < 0)
                return -1;
        }
        else {
            Py_DECREF(obj);
        }
    }
    poller_rewatch(p);
    return 0;
}

static void transport_on_events(Transport *t, uint32_t events);
static int transport_flush(Transport *t);

/* Send the gathered writes of every corked transport (a flush may write
 * again: the list can grow while it is walked). */
static void
poller_flush_corked(Poller *self)
{
    self->turn++;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(self->corked); i++) {
        Transport *t = (Transport *)PyList_GET_ITEM(self->corked, i);
        t->corked = 0;
        if (t->fd >= 0 && !t->lost_scheduled && has_pending(t) && transport_flush(t) < 0 && PyErr_Occurred())
            PyErr_WriteUnraisable((PyObject *)t);
    }
    if (PyList_GET_SIZE(self->corked) > 0)
        PyList_SetSlice(self->corked, 0, PY_SSIZE_T_MAX, NULL);
}

/* loop.call_soon() target: the writes a coroutine made in a row. */
static PyObject *
Poller_flush(Poller *self, PyObject *Py_UNUSED(ignored))
{
    self->flush_scheduled = 0;
    poller_flush_corked(self);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Poller_poll(Poller *self, PyObject *Py_UNUSED(ignored))
{
    struct epoll_event events[MAX_EVENTS];
    if (self->epfd < 0)
        Py_RETURN_NONE;
    int n;
    Pollable *solo = (Pollable *)self->solo;
    if (solo != NULL && self->registered == 1 && solo->events == EPOLLIN) {
        /* One socket, waiting to read (a client; a server's one client):
         * the set is ready only when that socket is, so it is read without
         * asking the set which one. Its entry stays on the set's ready
         * list; the loop's next wait polls the set, and the kernel drops
         * an entry no longer ready (fs/eventpoll.c, __ep_eventpoll_poll).
         * A system call fewer per message for a one-connection client. */
        events[0].events = EPOLLIN;
        events[0].data.ptr = solo;
        n = 1;
    }
    else {
        n = epoll_wait(self->epfd, events, MAX_EVENTS, 0);
        if (n < 0) {
            if (errno == EINTR)
                Py_RETURN_NONE;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (n == 1 && self->registered == 1) {
            self->solo = events[0].data.ptr;
            poller_rewatch(self);
        }
    }
    Py_INCREF(self);
    self->dispatching++;
    self->batch = n;
    for (int i = 0; i < n; i++) {
        Pollable *obj = (Pollable *)events[i].data.ptr;
        if (!obj->in_poller)
            continue; /* unregistered earlier in this batch */
        /* only transports are in the set (listeners: listener_watch) */
        Py_INCREF(obj);
        transport_on_events((Transport *)obj, events[i].events);
        Py_DECREF(obj);
        if (PyErr_Occurred())
            break; /* KeyboardInterrupt, SystemExit: the loop stops */
    }
    /* send what the callbacks wrote, even when a KeyboardInterrupt stops
     * the batch */
    PyObject *stopped = PyErr_Occurred() ? fetch_exc() : NULL;
    poller_flush_corked(self);
    if (stopped != NULL)
        restore_exc(stopped);
    self->dispatching--;
    if (!self->dispatching) {
        if (PyList_GET_SIZE(self->graveyard) > 0)
            PyList_SetSlice(self->graveyard, 0, PY_SSIZE_T_MAX, NULL);
        poller_shut(self);
    }
    Py_DECREF(self);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Poller_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"loop", NULL};
    PyObject *loop;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Poller", kwlist, &loop))
        return NULL;
    Poller *self = (Poller *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->epfd = -1;
    self->watched = -1;
    self->loop = Py_NewRef(loop);
    self->graveyard = PyList_New(0);
    self->corked = PyList_New(0);
    self->poll_cb = self->graveyard && self->corked
                        ? PyObject_GetAttrString((PyObject *)self, "_poll")
                        : NULL;
    self->flush_cb = self->poll_cb ? PyObject_GetAttrString((PyObject *)self, "_flush") : NULL;
    if (self->flush_cb == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
Poller_traverse(Poller *self, visitproc visit, void *arg)
{
    Py_VISIT(self->loop);
    Py_VISIT(self->poll_cb);
    Py_VISIT(self->flush_cb);
    Py_VISIT(self->graveyard);
    Py_VISIT(self->corked);
    return 0;
}

static int
Poller_clear(Poller *self)
{
    Py_CLEAR(self->poll_cb);
    Py_CLEAR(self->flush_cb);
    Py_CLEAR(self->graveyard);
    Py_CLEAR(self->corked);
    Py_CLEAR(self->loop);
    return 0;
}

static void
Poller_dealloc(Poller *self)
{
    PyObject_GC_UnTrack(self);
    if (self->epfd >= 0)
        close(self->epfd); /* only with transports leaked past their loop */
    Poller_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Poller_get_registered(Poller *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->registered);
}

static PyObject *
Poller_get_watched(Poller *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->watched);
}

static PyObject *
Poller_get_epfd(Poller *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->epfd);
}

static PyObject *
Poller_get_loop(Poller *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->loop);
}

static PyMethodDef Poller_methods[] = {
    {"_poll", (PyCFunction)Poller_poll, METH_NOARGS,
     "Dispatch the ready sockets (the loop calls this)."},
    {"_flush", (PyCFunction)Poller_flush, METH_NOARGS,
     "Send the writes gathered outside a dispatch (the loop calls this)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Poller_getset[] = {
    {"registered", (getter)Poller_get_registered, NULL,
     "Sockets (connections and listeners) watched now.", NULL},
    {"watched", (getter)Poller_get_watched, NULL,
     "The descriptor the loop watches: the epoll set's, or its lone connection's; -1: none.",
     NULL},
    {"epfd", (getter)Poller_get_epfd, NULL, "The epoll set's descriptor; -1: closed.", NULL},
    {"loop", (getter)Poller_get_loop, NULL, "The event loop.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject Poller_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tether._transport.Poller",
    .tp_doc = "Poller(loop): one epoll instance for a loop's tether sockets.",
    .tp_basicsize = sizeof(Poller),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Poller_new,
    .tp_dealloc = (destructor)Poller_dealloc,
    .tp_traverse = (traverseproc)Poller_traverse,
    .tp_clear = (inquiry)Poller_clear,
    .tp_methods = Poller_methods,
    .tp_getset = Poller_getset,
};

/* ------------------------------------------------------------------------
 * Reporting errors the way asyncio's transports do.
 */

static void
report(PyObject *loop, const char *message, PyObject *exc, PyObject *transport, PyObject *protocol)
{
    PyObject *ctx = Py_BuildValue("{s:s,s:O,s:O,s:O}", "message", message, "exception", exc,
                                  "transport", transport, "protocol",
                                  protocol ? protocol : Py_None);
    PyObject *r = ctx ? PyObject_CallMethodObjArgs(loop, s_call_exception_handler, ctx, NULL)
                      : NULL;
    if (r == NULL)
        PyErr_WriteUnraisable(loop);
    Py_XDECREF(r);
    Py_XDECREF(ctx);
}

/* ------------------------------------------------------------------------
 * Transport
 */

static int
transport_want(Transport *t)
{
    uint32_t ev = 0;
    if (t->fd < 0)
        return 0;
    if (!t->closing && !t->reading_paused && !t->at_eof)
        ev |= EPOLLIN;
    if (has_pending(t))
        ev |= EPOLLOUT;
    return pollable_set_events((Pollable *)t, ev);
}

/* Stop everything and let the loop call connection_lost(exc) soon. */
static void
transport_force_close(Transport *t, PyObject *exc)
{
    if (t->lost_scheduled)
        return;
    t->closing = 1;
    t->lost_scheduled = 1;
    Py_CLEAR(t->pending);
    t->buffered = 0;
    t->gathered = 0;
    t->head_off = 0;
    if (pollable_set_events((Pollable *)t, 0) < 0)
        PyErr_WriteUnraisable((PyObject *)t);
    Poller *p = t->poller;
    PyObject *cb = PyObject_GetAttr((PyObject *)t, s_call_connection_lost);
    PyObject *r = cb ? PyObject_CallMethodObjArgs(p->loop, s_call_soon, cb, exc ? exc : Py_None, NULL)
                     : NULL;
    if (r == NULL)
        PyErr_WriteUnraisable((PyObject *)t);
    Py_XDECREF(r);
    Py_XDECREF(cb);
}

/* The current exception ends the connection; asyncio reports everything but
 * the usual disconnections to the loop's exception handler. */
static void
transport_fatal(Transport *t, const char *message)
{
    PyObject *exc = fetch_exc();
    if (!PyErr_GivenExceptionMatches(exc, PyExc_OSError)) {
        if (PyErr_GivenExceptionMatches(exc, PyExc_Exception))
            report(t->poller->loop, message, exc, (PyObject *)t, t->protocol);
        else {
            /* KeyboardInterrupt, SystemExit: let them through after closing */
            transport_force_close(t, exc);
            restore_exc(exc);
            return;
        }
    }
    transport_force_close(t, exc);
    Py_DECREF(exc);
}

static void
transport_fatal_errno(Transport *t, int err, const char *message)
{
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    transport_fatal(t, message);
}

static void
transport_maybe_pause(Transport *t)
{
    if (t->protocol_paused || t->buffered <= t->high_water)
        return;
    t->protocol_paused = 1;
    PyObject *r = PyObject_CallMethodNoArgs(t->protocol, s_pause_writing);
    if (r == NULL) {
        PyObject *exc = fetch_exc();
        report(t->poller->loop, "protocol.pause_writing() failed", exc, (PyObject *)t,
               t->protocol);
        Py_DECREF(exc);
    }
    Py_XDECREF(r);
}

static void
transport_maybe_resume(Transport *t)
{
    if (!t->protocol_paused || t->buffered > t->low_water)
        return;
    t->protocol_paused = 0;
    PyObject *r = PyObject_CallMethodNoArgs(t->protocol, s_resume_writing);
    if (r == NULL) {
        PyObject *exc = fetch_exc();
        report(t->poller->loop, "protocol.resume_writing() failed", exc, (PyObject *)t,
               t->protocol);
        Py_DECREF(exc);
    }
    Py_XDECREF(r);
}

/* A queued chunk is a bytes object, or a bytearray that gathers small writes
 * (see CORK_MAX). */
static inline char *
chunk_data(PyObject *b)
{
    return PyBytes_CheckExact(b) ? PyBytes_AS_STRING(b) : PyByteArray_AS_STRING(b);
}

static inline Py_ssize_t
chunk_size(PyObject *b)
{
    return PyBytes_CheckExact(b) ? PyBytes_GET_SIZE(b) : PyByteArray_GET_SIZE(b);
}

/* Gather a small write made during dispatch, the transport listed for the
 * flush at the end of the batch. The first write of an idle transport is
 * kept as it is when it is a bytes object (no copy: one echo, one send);
 * the next ones are appended to a gathering bytearray at the queue's end. */
static int
transport_cork(Transport *t, PyObject *data, const char *buf, Py_ssize_t len)
{
    if (t->pending == NULL && (t->pending = PyList_New(0)) == NULL)
        return -1;
    Py_ssize_t n = PyList_GET_SIZE(t->pending);
    PyObject *last = n > 0 ? PyList_GET_ITEM(t->pending, n - 1) : NULL;
    if (last != NULL && PyByteArray_CheckExact(last)) {
        Py_ssize_t size = PyByteArray_GET_SIZE(last);
        if (PyByteArray_Resize(last, size + len) < 0)
            return -1;
        memcpy(PyByteArray_AS_STRING(last) + size, buf, (size_t)len);
    }
    else if (last != NULL && t->gathered > 0 && (n > 1 || t->head_off == 0)) {
        /* the queue ends with a gathered bytes object: gather from now on
         * into a bytearray that starts with it */
        Py_ssize_t size = PyBytes_GET_SIZE(last);
        PyObject *chunk = PyByteArray_FromStringAndSize(NULL, size + len);
        if (chunk == NULL)
            return -1;
        memcpy(PyByteArray_AS_STRING(chunk), PyBytes_AS_STRING(last), (size_t)size);
        memcpy(PyByteArray_AS_STRING(chunk) + size, buf, (size_t)len);
        if (PyList_SetItem(t->pending, n - 1, chunk) < 0) /* steals chunk */
            return -1;
    }
    else {
        PyObject *chunk = last == NULL && PyBytes_CheckExact(data) &&
                                  PyBytes_AS_STRING(data) == buf && PyBytes_GET_SIZE(data) == len
                              ? Py_NewRef(data)
                              : PyByteArray_FromStringAndSize(buf, len);
        if (chunk == NULL)
            return -1;
        int rc = PyList_Append(t->pending, chunk);
        Py_DECREF(chunk);
        if (rc < 0)
            return -1;
    }
    t->buffered += len;
    t->gathered += len;
    if (!t->corked) {
        if (PyList_Append(t->poller->corked, (PyObject *)t) < 0)
            return -1;
        t->corked = 1;
    }
    return 0;
}

/* Queue bytes for EPOLLOUT: a bytes object is kept as is (also the unsent
 * tail of one, when it heads the queue: head_off skips what was sent),
 * anything else is copied (the caller may reuse its buffer). */
static int
transport_queue(Transport *t, PyObject *data, const char *buf, Py_ssize_t len)
{
    PyObject *chunk;
    int empty = !has_pending(t);
    if (PyBytes_CheckExact(data) && PyBytes_AS_STRING(data) + PyBytes_GET_SIZE(data) == buf + len &&
        (PyBytes_AS_STRING(data) == buf || (empty && buf > PyBytes_AS_STRING(data)))) {
        chunk = Py_NewRef(data);
        if (empty)
            t->head_off = buf - PyBytes_AS_STRING(data);
    }
    else
        chunk = PyBytes_FromStringAndSize(buf, len);
    if (chunk == NULL)
        return -1;
    if (t->pending == NULL) {
        t->pending = PyList_New(0);
        if (t->pending == NULL) {
            Py_DECREF(chunk);
            return -1;
        }
    }
    int rc = PyList_Append(t->pending, chunk);
    Py_DECREF(chunk);
    if (rc < 0)
        return -1;
    t->buffered += len;
    return 0;
}

static int transport_flush(Transport *t);

/* The queue as iovecs (at most MAX_IOV, from its unsent head on); returns
 * how many. */
static int
pending_iov(Transport *t, struct iovec *iov)
{
    Py_ssize_t n = PyList_GET_SIZE(t->pending);
    int cnt = 0;
    for (Py_ssize_t i = 0; i < n && cnt < MAX_IOV; i++, cnt++) {
        PyObject *b = PyList_GET_ITEM(t->pending, i);
        Py_ssize_t off = i == 0 ? t->head_off : 0;
        iov[cnt].iov_base = chunk_data(b) + off;
        iov[cnt].iov_len = (size_t)(chunk_size(b) - off);
    }
    return cnt;
}

static void
transport_do_eof(Transport *t)
{
    if (!t->eof_sent && t->fd >= 0) {
        t->eof_sent = 1;
        shutdown(t->fd, SHUT_WR);
    }
}

/* Everything queued has been sent. */
static void
transport_drained(Transport *t)
{
    transport_maybe_resume(t);
    if (t->closing && !t->lost_scheduled) {
        transport_force_close(t, NULL);
        return;
    }
    if (t->eof_pending)
        transport_do_eof(t);
    if (transport_want(t) < 0)
        transport_fatal(t, "Fatal error on transport (epoll)");
}

/* Send what is queued, as much as the kernel takes now. */
static int
transport_flush(Transport *t)
{
    struct iovec iov[MAX_IOV];
    t->gathered = 0; /* all of it is offered now; what stays is a backlog */
    while (has_pending(t)) {
        Py_ssize_t n = PyList_GET_SIZE(t->pending);
        int cnt = pending_iov(t, iov);
        /* one buffer (the usual gathered echo): send() is the cheaper call */
        ssize_t sent = cnt == 1 ? send(t->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL)
                                : writev(t->fd, iov, cnt);
        if (sent < 0) {
            if (would_block(errno))
                goto wait;
            transport_fatal_errno(t, errno, "Fatal write error on socket transport");
            return -1;
        }
        t->buffered -= sent;
        Py_ssize_t done = 0;
        Py_ssize_t left = sent;
        while (done < n) {
            PyObject *b = PyList_GET_ITEM(t->pending, done);
            Py_ssize_t avail = chunk_size(b) - t->head_off;
            if (left < avail) {
                t->head_off += left;
                break;
            }
            left -= avail;
            t->head_off = 0;
            done++;
        }
        if (done > 0 && PyList_SetSlice(t->pending, 0, done, NULL) < 0)
            return -1;
        if (done < cnt) {
            /* the kernel's buffer is full; wake a paused writer at the
             * low-water mark, as asyncio does after every send */
            transport_maybe_resume(t);
            goto wait;
        }
    }
    transport_drained(t);
    return 0;
wait:
    /* the rest goes on EPOLLOUT */
    if (!t->lost_scheduled && transport_want(t) < 0) {
        transport_fatal(t, "Fatal error on transport (epoll)");
        return -1;
    }
    return 0;
}

/* close(): stop reading, and end once what is queued has been sent. */
static int
transport_close(Transport *t)
{
    if (t->closing)
        return 0;
    t->closing = 1;
    if (!has_pending(t)) {
        transport_force_close(t, NULL);
        return 0;
    }
    return transport_want(t);
}

/* After a read: the wake-up threshold the protocol asked for during it
 * (set_read_low_water), or the kernel's default if it asked for none, so a
 * threshold lasts one read unless asked for again. One setsockopt() when it
 * changes. socket(7): "SO_RCVLOWAT ... select(2), poll(2), and epoll(7)
 * indicate a socket as readable only if at least SO_RCVLOWAT bytes are
 * available" (Linux; a FIN or an error still wakes the reader). */
static void
transport_apply_lowat(Transport *t)
{
    int want = t->lowat_req > 1 ? (int)t->lowat_req : 1;
    if (want == (t->lowat > 1 ? t->lowat : 1) || t->fd < 0 || t->closing)
        return;
    if (setsockopt(t->fd, SOL_SOCKET, SO_RCVLOWAT, &want, sizeof(want)) == 0)
        t->lowat = want;
}

static void
transport_on_events(Transport *t, uint32_t events)
{
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && has_pending(t)) {
        if (transport_flush(t) < 0)
            return;
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)) || t->closing || t->reading_paused ||
        t->at_eof || t->fd < 0)
        return;
    PyObject *protocol = Py_NewRef(t->protocol);
    if (t->buffered_protocol) {
        static PyObject *minus_one = NULL;
        if (minus_one == NULL)
            minus_one = PyLong_FromLong(-1);
        PyObject *buf = PyObject_CallMethodOneArg(protocol, s_get_buffer, minus_one);
        if (buf == NULL) {
            transport_fatal(t, "Fatal error: protocol.get_buffer() call failed.");
            goto done;
        }
        Py_buffer view;
        if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0) {
            Py_DECREF(buf);
            transport_fatal(t, "Fatal error: protocol.get_buffer() call failed.");
            goto done;
        }
        if (view.len == 0) {
            PyBuffer_Release(&view);
            Py_DECREF(buf);
            PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
            transport_fatal(t, "Fatal error: protocol.get_buffer() call failed.");
            goto done;
        }
        ssize_t n = recv(t->fd, view.buf, (size_t)view.len, 0);
        int err = errno;
        PyBuffer_Release(&view);
        Py_DECREF(buf);
        if (n > 0) {
            PyObject *nb = PyLong_FromSsize_t(n);
            t->lowat_req = 0;
            PyObject *r = nb ? PyObject_CallMethodOneArg(protocol, s_buffer_updated, nb) : NULL;
            Py_XDECREF(nb);
            if (r == NULL)
                transport_fatal(t, "Fatal error: protocol.buffer_updated() call failed.");
            else
                transport_apply_lowat(t);
            Py_XDECREF(r);
            goto done;
        }
        if (n < 0) {
            if (!would_block(err))
                transport_fatal_errno(t, err, "Fatal read error on socket transport");
            goto done;
        }
    }
    else {
        char stack[65536];
        ssize_t n = recv(t->fd, stack, sizeof(stack), 0);
        int err = errno;
        if (n > 0) {
            PyObject *data = PyBytes_FromStringAndSize(stack, n);
            PyObject *r = data ? PyObject_CallMethodOneArg(protocol, s_data_received, data) : NULL;
            Py_XDECREF(data);
            if (r == NULL)
                transport_fatal(t, "Fatal error: protocol.data_received() call failed.");
            Py_XDECREF(r);
            goto done;
        }
        if (n < 0) {
            if (!would_block(err))
                transport_fatal_errno(t, err, "Fatal read error on socket transport");
            goto done;
        }
    }
    /* n == 0: the peer sent its FIN */
    {
        PyObject *keep = PyObject_CallMethodNoArgs(protocol, s_eof_received);
        if (keep == NULL) {
            transport_fatal(t, "Fatal error: protocol.eof_received() call failed.");
            goto done;
        }
        int keep_open = PyObject_IsTrue(keep);
        Py_DECREF(keep);
        if (keep_open < 0) {
            transport_fatal(t, "Fatal error: protocol.eof_received() call failed.");
            goto done;
        }
        if (t->closing)
            goto done;
        if (keep_open) {
            t->at_eof = 1; /* nothing more will come; the write side stays */
            if (transport_want(t) < 0)
                transport_fatal(t, "Fatal error on transport (epoll)");
        }
        else if (transport_close(t) < 0) {
            transport_fatal(t, "Fatal error on transport (epoll)");
        }
    }
done:
    Py_DECREF(protocol);
}

static PyObject *
sockaddr_to_python(const struct sockaddr *sa, socklen_t len)
{
    char host[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        return Py_BuildValue("(si)", host, ntohs(a->sin_port));
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        return Py_BuildValue("(siII)", host, ntohs(a->sin6_port), ntohl(a->sin6_flowinfo),
                             a->sin6_scope_id);
    }
    if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *a = (const struct sockaddr_un *)sa;
        Py_ssize_t n = (Py_ssize_t)len - (Py_ssize_t)offsetof(struct sockaddr_un, sun_path);
        if (n <= 0)
            return PyUnicode_FromString("");
        if (a->sun_path[0] == 0) /* abstract namespace: bytes, as socket does */
            return PyBytes_FromStringAndSize(a->sun_path, n);
        return PyUnicode_DecodeFSDefault(a->sun_path);
    }
    Py_RETURN_NONE;
}

/* getpeername() or getsockname() as Python gives it; NULL (no exception)
 * when the socket has no such address. */
static PyObject *
socket_address(int fd, int peer)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int rc = peer ? getpeername(fd, (struct sockaddr *)&ss, &len)
                  : getsockname(fd, (struct sockaddr *)&ss, &len);
    if (rc < 0)
        return NULL;
    PyObject *address = sockaddr_to_python((struct sockaddr *)&ss, len);
    if (address == NULL)
        PyErr_Clear();
    return address;
}

static Transport *
transport_create(PyTypeObject *type, Poller *poller, int fd, PyObject *protocol)
{
    Transport *t = (Transport *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->poller = (Poller *)Py_NewRef(poller);
    t->fd = fd;
    t->protocol = Py_NewRef(protocol);
    t->high_water = DEFAULT_HIGH_WATER;
    t->low_water = DEFAULT_HIGH_WATER / 4;
    int has = PyObject_HasAttr(protocol, s_get_buffer);
    t->buffered_protocol = has ? 1 : 0;
    /* read now, as asyncio does: a reset peer has no peername any more */
    t->write_turn = poller->turn - 1; /* its first write goes out at once */
    t->peername = socket_address(fd, 1);
    t->sockname = socket_address(fd, 0);
    if (pollable_attach((Pollable *)t) < 0) {
        t->fd = -1; /* not ours yet: the caller closes it */
        Py_DECREF(t);
        return NULL;
    }
    return t;
}

/* Register for reading, then tell the protocol: it may write, pause reading
 * or close from connection_made() itself. */
static int
transport_start(Transport *t)
{
    if (transport_want(t) < 0)
        return -1;
    PyObject *r = PyObject_CallMethodOneArg(t->protocol, s_connection_made, (PyObject *)t);
    if (r == NULL) {
        transport_fatal(t, "Fatal error: protocol.connection_made() call failed.");
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_DECREF(r);
    return 0;
}

static PyObject *
Transport_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"poller", "fd", "protocol", NULL};
    Poller *poller;
    int fd;
    PyObject *protocol;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!iO:Transport", kwlist, &Poller_Type, &poller,
                                     &fd, &protocol))
        return NULL;
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "fd must be a connected socket's descriptor");
        return NULL;
    }
    Transport *t = transport_create(type, poller, fd, protocol);
    if (t == NULL)
        return NULL;
    if (transport_start(t) < 0) {
        t->fd = -1; /* the caller still owns the descriptor */
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

static void
transport_release_fd(Transport *t)
{
    if (t->fd < 0)
        return;
    pollable_detach((Pollable *)t);
    if (t->sock != NULL) {
        PyObject *r = PyObject_CallMethod(t->sock, "close", NULL);
        if (r == NULL)
            PyErr_WriteUnraisable((PyObject *)t);
        Py_XDECREF(r);
        Py_CLEAR(t->sock);
    }
    else {
        close(t->fd);
    }
    t->fd = -1;
}

static int
Transport_traverse(Transport *t, visitproc visit, void *arg)
{
    Py_VISIT(t->poller);
    Py_VISIT(t->protocol);
    Py_VISIT(t->pending);
    Py_VISIT(t->sock);
    return 0;
}

static int
Transport_clear(Transport *t)
{
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->pending);
    return 0;
}

static void
Transport_dealloc(Transport *t)
{
    PyObject_GC_UnTrack(t);
    if (t->fd >= 0) {
        if (t->sock == NULL)
            close(t->fd);
        t->fd = -1;
    }
    pollable_detach((Pollable *)t); /* out of the epoll set already: only the count */
    Py_CLEAR(t->sock);
    Py_CLEAR(t->peername);
    Py_CLEAR(t->sockname);
    Transport_clear(t);
    Py_CLEAR(t->poller);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyObject *
Transport_call_connection_lost(Transport *t, PyObject *exc)
{
    PyObject *protocol = t->protocol;
    PyObject *r = NULL;
    if (protocol != NULL) {
        t->protocol = NULL;
        r = PyObject_CallMethodOneArg(protocol, s_connection_lost, exc);
        Py_DECREF(protocol);
    }
    else {
        r = Py_NewRef(Py_None);
    }
    /* release the descriptor even when connection_lost() raised; its
     * exception then reaches the loop's handler through Handle._run */
    PyObject *raised = r == NULL ? fetch_exc() : NULL;
    transport_release_fd(t);
    if (raised != NULL)
        restore_exc(raised);
    return r;
}

/* write() and writelines() take bytes-like objects, never str (asyncio's
 * message). */
static int
check_data(PyObject *data)
{
    if (PyUnicode_Check(data) || !PyObject_CheckBuffer(data)) {
        PyErr_Format(PyExc_TypeError, "data argument must be a bytes-like object, not '%.100s'",
                     Py_TYPE(data)->tp_name);
        return -1;
    }
    return 0;
}

static int
get_data(PyObject *data, Py_buffer *view)
{
    if (check_data(data) < 0)
        return -1;
    return PyObject_GetBuffer(data, view, PyBUF_SIMPLE);
}

static PyObject *
Transport_write(Transport *t, PyObject *data)
{
    Py_buffer view;
    if (get_data(data, &view) < 0)
        return NULL;
    if (t->eof_pending || t->eof_sent) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_RuntimeError, "Cannot call write() after write_eof()");
        return NULL;
    }
    if (view.len == 0 || t->lost_scheduled || t->fd < 0) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    const char *buf = view.buf;
    Py_ssize_t len = view.len;
    int idle = !has_pending(t);
    Poller *p = t->poller;
    if (len < CORK_WRITE_MAX && (idle || t->corked) &&
        ((p->dispatching && p->batch > 1) || t->corked ||
         t->write_turn == p->turn)) {
        /* Inside a dispatch of several connections (protocol callbacks,
         * and coroutines that tether.aio.waiter woke inside it): sent when
         * the batch ends, the replies together. After a first send in this
         * turn of the loop (the rest of a burst of replies to one read, or
         * a coroutine's sends without a wait between them): sent when the
         * dispatch ends, or at the loop's next turn. A first send goes out
         * at once (below), from a dispatch that read a single connection or
         * from outside any: a reply that waits for the end of the dispatch
         * cost a sequential client 2% of its round trips. */
        int rc = transport_cork(t, data, buf, len);
        PyBuffer_Release(&view);
        if (rc < 0)
            return NULL;
        if (!p->dispatching && !p->flush_scheduled) {
            PyObject *r = PyObject_CallMethodOneArg(p->loop, s_call_soon, p->flush_cb);
            if (r == NULL)
                return NULL;
            Py_DECREF(r);
            p->flush_scheduled = 1;
        }
        if (t->buffered >= CORK_MAX && transport_flush(t) < 0 && PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    if (t->corked && !idle) {
        /* a large write after gathered ones: all of it goes now, in order */
        int rc = transport_queue(t, data, buf, len);
        PyBuffer_Release(&view);
        if (rc < 0 || (transport_flush(t) < 0 && PyErr_Occurred()))
            return NULL;
        transport_maybe_pause(t);
        Py_RETURN_NONE;
    }
    if (idle) {
        t->write_turn = p->turn;
        ssize_t n = send(t->fd, buf, (size_t)len, MSG_NOSIGNAL);
        if (n < 0) {
            if (!would_block(errno)) {
                int err = errno;
                PyBuffer_Release(&view);
                transport_fatal_errno(t, err, "Fatal write error on socket transport");
                if (PyErr_Occurred())
                    return NULL;
                Py_RETURN_NONE;
            }
            n = 0;
        }
        if (n == len) {
            PyBuffer_Release(&view);
            Py_RETURN_NONE;
        }
        buf += n;
        len -= n;
        if (transport_queue(t, data, buf, len) < 0 || transport_want(t) < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    else if (transport_queue(t, data, buf, len) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    PyBuffer_Release(&view);
    transport_maybe_pause(t);
    Py_RETURN_NONE;
}

static PyObject *
Transport_writelines(Transport *t, PyObject *lines)
{
    PyObject *seq = PySequence_Fast(lines, "writelines() takes an iterable of bytes-like objects");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    if (t->eof_pending || t->eof_sent) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_RuntimeError, "Cannot call writelines() after write_eof()");
        return NULL;
    }
    if (t->lost_scheduled || t->fd < 0) {
        Py_DECREF(seq);
        Py_RETURN_NONE;
    }
    /* all or nothing: check every item before sending any */
    for (Py_ssize_t k = 0; k < n; k++) {
        if (check_data(items[k]) < 0) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_buffer views[MAX_IOV];
    struct iovec iov[MAX_IOV];
    Py_ssize_t i = 0;
    int rc = 0;
    while (i < n && rc == 0) {
        int cnt = 0;
        Py_ssize_t total = 0;
        for (; i < n && cnt < MAX_IOV; i++) {
            if (get_data(items[i], &views[cnt]) < 0) {
                rc = -1;
                break;
            }
            iov[cnt].iov_base = views[cnt].buf;
            iov[cnt].iov_len = (size_t)views[cnt].len;
            total += views[cnt].len;
            cnt++;
        }
        if (rc == 0 && total > 0) {
            ssize_t sent = 0;
            if (!has_pending(t)) {
                sent = writev(t->fd, iov, cnt);
                if (sent < 0) {
                    if (!would_block(errno)) {
                        int err = errno;
                        for (int k = 0; k < cnt; k++)
                            PyBuffer_Release(&views[k]);
                        Py_DECREF(seq);
                        transport_fatal_errno(t, err, "Fatal write error on socket transport");
                        if (PyErr_Occurred())
                            return NULL;
                        Py_RETURN_NONE;
                    }
                    sent = 0;
                }
            }
            /* queue what the kernel did not take */
            Py_ssize_t skip = sent;
            for (int k = 0; k < cnt && rc == 0; k++) {
                Py_ssize_t len = views[k].len;
                if (skip >= len) {
                    skip -= len;
                    continue;
                }
                rc = transport_queue(t, items[i - cnt + k], (const char *)views[k].buf + skip,
                                     len - skip);
                skip = 0;
            }
        }
        for (int k = 0; k < cnt; k++)
            PyBuffer_Release(&views[k]);
    }
    Py_DECREF(seq);
    /* whatever was queued must wait for EPOLLOUT, even after an error */
    PyObject *exc = rc < 0 ? fetch_exc() : NULL;
    if (transport_want(t) < 0) {
        Py_XDECREF(exc);
        return NULL;
    }
    if (exc != NULL) {
        restore_exc(exc);
        return NULL;
    }
    transport_maybe_pause(t);
    Py_RETURN_NONE;
}

static PyObject *
Transport_close(Transport *t, PyObject *Py_UNUSED(ignored))
{
    if (transport_close(t) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Transport_abort(Transport *t, PyObject *Py_UNUSED(ignored))
{
    if (t->corked && t->fd >= 0 && !t->lost_scheduled && t->pending != NULL) {
        /* Gathered writes are ones asyncio would have handed to the kernel
         * already: hand them over (what it takes now) before dropping. */
        struct iovec iov[MAX_IOV];
        int cnt = pending_iov(t, iov);
        if (cnt > 0 && writev(t->fd, iov, cnt) < 0) {
            /* dropping it all is what abort() does anyway */
        }
    }
    transport_force_close(t, NULL);
    Py_RETURN_NONE;
}

static PyObject *
Transport_is_closing(Transport *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(t->closing);
}

static PyObject *
Transport_is_reading(Transport *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(!t->closing && !t->reading_paused);
}

static PyObject *
Transport_pause_reading(Transport *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || t->reading_paused)
        Py_RETURN_NONE;
    t->reading_paused = 1;
    if (transport_want(t) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Transport_resume_reading(Transport *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || !t->reading_paused)
        Py_RETURN_NONE;
    t->reading_paused = 0;
    if (transport_want(t) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Transport_set_write_buffer_limits(Transport *t, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"high", "low", NULL};
    PyObject *high_o = Py_None, *low_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:set_write_buffer_limits", kwlist, &high_o,
                                     &low_o))
        return NULL;
    Py_ssize_t high, low;
    if (high_o == Py_None) {
        if (low_o == Py_None)
            high = DEFAULT_HIGH_WATER;
        else {
            low = PyLong_AsSsize_t(low_o);
            if (low == -1 && PyErr_Occurred())
                return NULL;
            high = 4 * low;
        }
    }
    else {
        high = PyLong_AsSsize_t(high_o);
        if (high == -1 && PyErr_Occurred())
            return NULL;
    }
    if (low_o == Py_None)
        low = high / 4;
    else {
        low = PyLong_AsSsize_t(low_o);
        if (low == -1 && PyErr_Occurred())
            return NULL;
    }
    if (!(high >= low && low >= 0)) {
        PyErr_Format(PyExc_ValueError, "high (%zd) must be >= low (%zd) must be >= 0", high, low);
        return NULL;
    }
    t->high_water = high;
    t->low_water = low;
    transport_maybe_pause(t);
    Py_RETURN_NONE;
}

static PyObject *
Transport_get_write_buffer_limits(Transport *t, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(nn)", t->low_water, t->high_water);
}

/* What the kernel did not take: gathered writes are not counted (they
 * have not been offered yet, and asyncio would have sent them already), so
 * that the size means what it means on asyncio's transports: a backlog. */
static PyObject *
Transport_get_write_buffer_size(Transport *t, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(t->buffered - t->gathered);
}

static PyObject *
Transport_can_write_eof(Transport *t, PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_TRUE;
}

static PyObject *
Transport_write_eof(Transport *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || t->eof_pending || t->eof_sent)
        Py_RETURN_NONE;
    t->eof_pending = 1;
    if (!has_pending(t))
        transport_do_eof(t);
    Py_RETURN_NONE;
}

static PyObject *
Transport_get_protocol(Transport *t, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(t->protocol ? t->protocol : Py_None);
}

static PyObject *
Transport_set_protocol(Transport *t, PyObject *protocol)
{
    Py_XSETREF(t->protocol, Py_NewRef(protocol));
    int has = PyObject_HasAttr(protocol, s_get_buffer);
    t->buffered_protocol = has ? 1 : 0;
    Py_RETURN_NONE;
}

static PyObject *
Transport_get_extra_info(Transport *t, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "default", NULL};
    const char *name;
    PyObject *dflt = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|O:get_extra_info", kwlist, &name, &dflt))
        return NULL;
    if (strcmp(name, "peername") == 0)
        return Py_NewRef(t->peername ? t->peername : dflt);
    if (strcmp(name, "sockname") == 0)
        return Py_NewRef(t->sockname ? t->sockname : dflt);
    if (strcmp(name, "socket") == 0 && t->fd >= 0) {
        if (t->sock == NULL) {
            /* the socket object owns the descriptor from now on */
            PyObject *kw = Py_BuildValue("{s:i}", "fileno", t->fd);
            PyObject *empty = PyTuple_New(0);
            if (kw != NULL && empty != NULL)
                t->sock = PyObject_Call(socket_socket, empty, kw);
            Py_XDECREF(kw);
            Py_XDECREF(empty);
            if (t->sock == NULL)
                return NULL;
        }
        return Py_NewRef(t->sock);
    }
    return Py_NewRef(dflt);
}

static PyObject *
Transport_get_fd(Transport *t, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(t->fd);
}

static PyObject *
Transport_get_gathered(Transport *t, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(t->gathered);
}

/* Transport.flush(): the gathered writes go to the kernel now instead of
 * at the end of the batch, so that what it refuses shows as a backlog. */
static PyObject *
Transport_flush(Transport *t, PyObject *Py_UNUSED(ignored))
{
    if (t->gathered > 0 && t->fd >= 0 && !t->lost_scheduled && transport_flush(t) < 0 &&
        PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* Transport.gather_writes(): the protocol has several replies to make for
 * one read (a read that brought several messages); the first of them is
 * gathered like the rest instead of going out at once, so all leave in one
 * send() when the dispatch ends (or at the loop's next turn). */
static PyObject *
Transport_gather_writes(Transport *t, PyObject *Py_UNUSED(ignored))
{
    if (t->poller != NULL)
        t->write_turn = t->poller->turn;
    Py_RETURN_NONE;
}

/* Transport.set_read_low_water(n): called from buffer_updated, the protocol
 * can use nothing short of n more bytes (the rest of a large frame's
 * payload): the socket wakes the loop only once min(n, LOWAT_MAX) bytes are
 * in, instead of for every segment that arrives. Lasts until the end of the
 * next read; 0 or 1 ask for nothing. */
static PyObject *
Transport_set_read_low_water(Transport *t, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "set_read_low_water() needs a count of bytes >= 0");
        return NULL;
    }
    t->lowat_req = (unsigned)(n < LOWAT_MAX ? n : LOWAT_MAX);
    Py_RETURN_NONE;
}

static PyMethodDef Transport_methods[] = {
    {"set_read_low_water", (PyCFunction)Transport_set_read_low_water, METH_O,
     "From buffer_updated(): nothing short of n more bytes is of use (the rest of a large\n"
     "frame), so wake the loop once min(n, 256 KiB) are in (SO_RCVLOWAT). Lasts one read."},
    {"write", (PyCFunction)Transport_write, METH_O, "Send bytes (queued if the kernel is full)."},
    {"flush", (PyCFunction)Transport_flush, METH_NOARGS,
     "Offer the gathered writes to the kernel now; what it refuses becomes the backlog\n"
     "that get_write_buffer_size() counts (tether.aio.Connection.backlog() calls it)."},
    {"gather_writes", (PyCFunction)Transport_gather_writes, METH_NOARGS,
     "Gather the small writes of this turn from the first one on: they leave in one send()\n"
     "when the dispatch ends (tether.aio.Connection calls it for a read of several messages)."},
    {"writelines", (PyCFunction)Transport_writelines, METH_O,
     "Send several buffers with one writev()."},
    {"close", (PyCFunction)Transport_close, METH_NOARGS,
     "Close after what is queued has been sent."},
    {"abort", (PyCFunction)Transport_abort, METH_NOARGS, "Close now, dropping what is queued."},
    {"is_closing", (PyCFunction)Transport_is_closing, METH_NOARGS, NULL},
    {"is_reading", (PyCFunction)Transport_is_reading, METH_NOARGS, NULL},
    {"pause_reading", (PyCFunction)Transport_pause_reading, METH_NOARGS, NULL},
    {"resume_reading", (PyCFunction)Transport_resume_reading, METH_NOARGS, NULL},
    {"set_write_buffer_limits", (PyCFunction)(void (*)(void))Transport_set_write_buffer_limits,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"get_write_buffer_limits", (PyCFunction)Transport_get_write_buffer_limits, METH_NOARGS,
     NULL},
    {"get_write_buffer_size", (PyCFunction)Transport_get_write_buffer_size, METH_NOARGS, NULL},
    {"can_write_eof", (PyCFunction)Transport_can_write_eof, METH_NOARGS, NULL},
    {"write_eof", (PyCFunction)Transport_write_eof, METH_NOARGS,
     "Shut down the sending side once what is queued has been sent."},
    {"get_protocol", (PyCFunction)Transport_get_protocol, METH_NOARGS, NULL},
    {"set_protocol", (PyCFunction)Transport_set_protocol, METH_O, NULL},
    {"get_extra_info", (PyCFunction)(void (*)(void))Transport_get_extra_info,
     METH_VARARGS | METH_KEYWORDS, "peername, sockname or socket; default otherwise."},
    {"_call_connection_lost", (PyCFunction)Transport_call_connection_lost, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Transport_getset[] = {
    {"fd", (getter)Transport_get_fd, NULL, "The socket's descriptor (-1 once closed).", NULL},
    {"gathered", (getter)Transport_get_gathered, NULL,
     "Bytes of small writes gathered for one send, not yet offered to the kernel.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject Transport_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tether._transport.Transport",
    .tp_doc = "Transport(poller, fd, protocol): asyncio.Transport over a connected socket.\n\n"
              "Takes ownership of fd and calls protocol.connection_made() at once.",
    .tp_basicsize = sizeof(Transport),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Transport_new,
    .tp_dealloc = (destructor)Transport_dealloc,
    .tp_traverse = (traverseproc)Transport_traverse,
    .tp_clear = (inquiry)Transport_clear,
    .tp_methods = Transport_methods,
    .tp_getset = Transport_getset,
};

/* ------------------------------------------------------------------------
 * Listener
 */

/* Start (on) or stop the loop's watch of the listening socket:
 * loop.add_reader(fd, self._accept), or loop.remove_reader(fd). 0, or -1
 * with an exception set. Stopping never fails: a closed loop watches
 * nothing any more. */
static int
listener_watch(Listener *l, int on)
{
    if (on == (l->events != 0))
        return 0;
    PyObject *loop = l->poller->loop;
    if (on && (l->fd < 0 || loop == NULL || l->poller->epfd < 0)) {
        PyErr_SetString(PyExc_RuntimeError, "the listener is closed");
        return -1;
    }
    PyObject *r = NULL;
    PyObject *num = loop != NULL ? PyLong_FromLong(l->fd) : NULL;
    if (num != NULL && on) {
        PyObject *cb = PyObject_GetAttr((PyObject *)l, s_accept);
        r = cb != NULL ? PyObject_CallMethodObjArgs(loop, s_add_reader, num, cb, NULL) : NULL;
        Py_XDECREF(cb);
    }
    else if (num != NULL) {
        r = PyObject_CallMethodObjArgs(loop, s_remove_reader, num, NULL);
    }
    Py_XDECREF(num);
    if (r == NULL) {
        if (on)
            return -1;
        PyErr_Clear();
    }
    Py_XDECREF(r);
    l->events = on ? EPOLLIN : 0;
    return 0;
}

/* The listener is done: the loop stops watching it, and it no longer keeps
 * its poller open. Keeps an exception already in flight (closing paths). */
static void
listener_detach(Listener *l)
{
    PyObject *exc = PyErr_Occurred() ? fetch_exc() : NULL;
    if (l->fd >= 0)
        listener_watch(l, 0);
    pollable_detach((Pollable *)l);
    if (exc != NULL)
        restore_exc(exc);
}

static void
listener_on_events(Listener *l)
{
    for (int i = 0; i < l->backlog && !l->paused && l->fd >= 0; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK)
                return;
            if (err == EINTR || err == ECONNABORTED || err == EPROTO)
                continue; /* that connection is gone; try the next one */
            /* EMFILE, ENFILE, ENOBUFS, ENOMEM: out of resources. Stop
             * accepting for a second, as asyncio does, instead of spinning. */
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            PyObject *exc = fetch_exc();
            report(l->poller->loop, "socket.accept() out of system resource", exc,
                   (PyObject *)l, NULL);
            Py_DECREF(exc);
            listener_watch(l, 0);
            l->paused = 1;
            PyObject *delay = PyFloat_FromDouble(1.0);
            PyObject *cb = PyObject_GetAttr((PyObject *)l, s_resume_accepting);
            PyObject *r = delay && cb ? PyObject_CallMethodObjArgs(l->poller->loop, s_call_later,
                                                                   delay, cb, NULL)
                                      : NULL;
            if (r == NULL)
                PyErr_WriteUnraisable((PyObject *)l);
            Py_XDECREF(r);
            Py_XDECREF(cb);
            Py_XDECREF(delay);
            return;
        }
        if (l->nodelay) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        PyObject *protocol = PyObject_CallNoArgs(l->factory);
        if (protocol == NULL) {
            close(fd);
            PyObject *exc = fetch_exc();
            report(l->poller->loop, "Error in the protocol factory", exc, (PyObject *)l, NULL);
            Py_DECREF(exc);
            continue;
        }
        Transport *t = transport_create(&Transport_Type, l->poller, fd, protocol);
        Py_DECREF(protocol);
        if (t == NULL) {
            close(fd);
            PyErr_WriteUnraisable((PyObject *)l);
            continue;
        }
        if (transport_start(t) < 0)
            PyErr_WriteUnraisable((PyObject *)t);
        Py_DECREF(t);
    }
}

/* loop.add_reader() target: connections are waiting to be accepted. */
static PyObject *
Listener_accept(Listener *l, PyObject *Py_UNUSED(ignored))
{
    Py_INCREF(l);
    listener_on_events(l);
    Py_DECREF(l);
    if (PyErr_Occurred())
        return NULL; /* KeyboardInterrupt, SystemExit: the loop stops */
    Py_RETURN_NONE;
}

static PyObject *
Listener_resume_accepting(Listener *l, PyObject *Py_UNUSED(ignored))
{
    if (l->paused && l->fd >= 0) {
        l->paused = 0;
        if (listener_watch(l, 1) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Listener_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"poller", "fd", "factory", "backlog", "nodelay", NULL};
    Poller *poller;
    int fd, backlog = 100, nodelay = 1;
    PyObject *factory;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!iO|ip:Listener", kwlist, &Poller_Type,
                                     &poller, &fd, &factory, &backlog, &nodelay))
        return NULL;
    Listener *l = (Listener *)type->tp_alloc(type, 0);
    if (l == NULL)
        return NULL;
    l->poller = (Poller *)Py_NewRef(poller);
    l->fd = fd;
    l->factory = Py_NewRef(factory);
    l->backlog = backlog > 0 ? backlog : 1;
    l->nodelay = nodelay;
    if (listen(fd, l->backlog) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        l->fd = -1;
        Py_DECREF(l);
        return NULL;
    }
    if (pollable_attach((Pollable *)l) < 0 || listener_watch(l, 1) < 0) {
        listener_detach(l);
        l->fd = -1;
        Py_DECREF(l);
        return NULL;
    }
    return (PyObject *)l;
}

static PyObject *
Listener_close(Listener *l, PyObject *Py_UNUSED(ignored))
{
    /* The listening socket belongs to the caller, which closes it. */
    if (l->fd >= 0) {
        listener_detach(l);
        l->fd = -1;
    }
    Py_RETURN_NONE;
}

static int
Listener_traverse(Listener *l, visitproc visit, void *arg)
{
    Py_VISIT(l->poller);
    Py_VISIT(l->factory);
    return 0;
}

static int
Listener_clear(Listener *l)
{
    Py_CLEAR(l->factory);
    return 0;
}

static void
Listener_dealloc(Listener *l)
{
    PyObject_GC_UnTrack(l);
    listener_detach(l);
    Listener_clear(l);
    Py_CLEAR(l->poller);
    Py_TYPE(l)->tp_free((PyObject *)l);
}

static PyMethodDef Listener_methods[] = {
    {"close", (PyCFunction)Listener_close, METH_NOARGS,
     "Stop accepting (the caller closes the listening socket)."},
    {"_resume_accepting", (PyCFunction)Listener_resume_accepting, METH_NOARGS, NULL},
    {"_accept", (PyCFunction)Listener_accept, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Listener_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tether._transport.Listener",
    .tp_doc = "Listener(poller, fd, factory, backlog=100, nodelay=True): listen on a bound\n"
              "non-blocking socket and accept its connections, each with a Transport and\n"
              "factory()'s protocol.",
    .tp_basicsize = sizeof(Listener),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Listener_new,
    .tp_dealloc = (destructor)Listener_dealloc,
    .tp_traverse = (traverseproc)Listener_traverse,
    .tp_clear = (inquiry)Listener_clear,
    .tp_methods = Listener_methods,
};

static int
intern_names(void)
{
#define INTERN(var, text)                                \
    if ((var = PyUnicode_InternFromString(text)) == NULL) \
        return -1;
    INTERN(s_get_buffer, "get_buffer");
    INTERN(s_accept, "_accept");
    INTERN(s_buffer_updated, "buffer_updated");
    INTERN(s_data_received, "data_received");
    INTERN(s_eof_received, "eof_received");
    INTERN(s_connection_lost, "connection_lost");
    INTERN(s_connection_made, "connection_made");
    INTERN(s_pause_writing, "pause_writing");
    INTERN(s_resume_writing, "resume_writing");
    INTERN(s_call_soon, "call_soon");
    INTERN(s_call_later, "call_later");
    INTERN(s_add_reader, "add_reader");
    INTERN(s_remove_reader, "remove_reader");
    INTERN(s_call_exception_handler, "call_exception_handler");
    INTERN(s_call_connection_lost, "_call_connection_lost");
    INTERN(s_resume_accepting, "_resume_accepting");
#undef INTERN
    return 0;
}

static int
transport_exec(PyObject *m)
{
    if (intern_names() < 0)
        return -1;
    PyObject *socket_mod = PyImport_ImportModule("socket");
    if (socket_mod == NULL)
        return -1;
    socket_socket = PyObject_GetAttrString(socket_mod, "socket");
    Py_DECREF(socket_mod);
    if (socket_socket == NULL)
        return -1;
    if (PyModule_AddType(m, &Poller_Type) < 0 || PyModule_AddType(m, &Transport_Type) < 0 ||
        PyModule_AddType(m, &Listener_Type) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot transport_slots[] = {
    {Py_mod_exec, transport_exec},
    {0, NULL},
};

static struct PyModuleDef transport_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tether._transport",
    .m_doc = "Compiled TCP transports for asyncio event loops (Linux, epoll).",
    .m_size = 0,
    .m_slots = transport_slots,
};

PyMODINIT_FUNC
PyInit__transport(void)
{
    return PyModuleDef_Init(&transport_module);
}

#else /* not Linux: no module; tether uses asyncio's transports */
#error "tether._transport needs Linux (epoll)"
#endif
