/* server_watch.c - connection deadlines (see server_watch.h). */
#define _POSIX_C_SOURCE 200809L
#include "server_watch.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

struct srv_conn {
    int fd;
    srv_conn_phase phase;
    double since;
    bool cut;
    srv_conn *prev, *next;
};

struct srv_watch {
    double deadline;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;
    srv_conn *head;
    uint64_t cuts;
    pthread_t thread;
};

/* How often the watchdog looks: deadlines hold to within this. */
#define WATCH_TICK_S 0.25

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* With the lock held. shutdown, not close: the descriptor stays
 * libmicrohttpd's, which sees the connection end and closes it itself. */
static void cut(srv_watch *w, srv_conn *c) {
    if (c->cut) return;
    c->cut = true;
    w->cuts++;
    shutdown(c->fd, SHUT_RDWR);
}

static void *watchdog(void *arg) {
    srv_watch *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        const double now = now_s();
        for (srv_conn *c = w->head; c; c = c->next)
            if (c->phase != SRV_CONN_COMPUTING && now - c->since > w->deadline) cut(w, c);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += (long)(WATCH_TICK_S * 1e9);
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->wake, &w->lock, &until);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

srv_watch *srv_watch_create(double deadline_s) {
    srv_watch *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->deadline = deadline_s;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    if (pthread_create(&w->thread, NULL, watchdog, w)) {
        pthread_cond_destroy(&w->wake);
        pthread_mutex_destroy(&w->lock);
        free(w);
        return NULL;
    }
    return w;
}

void srv_watch_free(srv_watch *w) {
    if (!w) return;
    pthread_mutex_lock(&w->lock);
    w->stop = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    while (w->head) {
        srv_conn *c = w->head;
        w->head = c->next;
        free(c);
    }
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

srv_conn *srv_watch_open(srv_watch *w, int fd) {
    srv_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->fd = fd;
    c->phase = SRV_CONN_RECEIVING;
    c->since = now_s();
    pthread_mutex_lock(&w->lock);
    c->next = w->head;
    if (w->head) w->head->prev = c;
    w->head = c;
    pthread_mutex_unlock(&w->lock);
    return c;
}

void srv_watch_close(srv_watch *w, srv_conn *c) {
    if (!c) return;
    pthread_mutex_lock(&w->lock);
    if (c->prev) c->prev->next = c->next;
    else w->head = c->next;
    if (c->next) c->next->prev = c->prev;
    pthread_mutex_unlock(&w->lock);
    free(c);
}

void srv_watch_set(srv_watch *w, srv_conn *c, srv_conn_phase phase) {
    if (!c) return;
    pthread_mutex_lock(&w->lock);
    c->phase = phase;
    c->since = now_s();
    pthread_mutex_unlock(&w->lock);
}

void srv_watch_cut_all(srv_watch *w) {
    pthread_mutex_lock(&w->lock);
    for (srv_conn *c = w->head; c; c = c->next)
        if (c->phase != SRV_CONN_COMPUTING) cut(w, c);
    pthread_mutex_unlock(&w->lock);
}

uint64_t srv_watch_cut_count(srv_watch *w) {
    pthread_mutex_lock(&w->lock);
    const uint64_t n = w->cuts;
    pthread_mutex_unlock(&w->lock);
    return n;
}
