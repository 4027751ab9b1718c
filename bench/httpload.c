/*
 * httpload: a small HTTP/1.1 keep-alive load generator.
 *
 * Why it exists: wrk and h2load frame a HEAD answer by its Content-Length
 * and then wait for a body that never comes, so they cannot benchmark HEAD
 * against servers that (correctly) announce the length of the GET body;
 * and a Python generator is itself the bottleneck on a 2-core machine.
 * This one frames answers the way RFC 9112 says (no body for HEAD, 1xx,
 * 204 and 304), on one thread and one epoll loop, so it leaves the other
 * core to the server.
 *
 *   httpload -c CONNECTIONS -d SECONDS [-m METHOD] [-H 'Name: value']... URL
 *
 * Prints one line of JSON on stdout.  Exit status 0 when the run completed
 * (even with errors: they are in the JSON), 1 when the host cannot be
 * resolved or the run cannot start, 2 on usage errors.
 *
 * Build: gcc -O2 -Wall -Wextra -o httpload httpload.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define RBUF_SIZE   65536     /* also the limit on one answer's header block */
#define LINE_MAX_   8192      /* limit on one chunk-size or trailer line */
#define RETRY_NS    10000000  /* 10 ms between attempts after a failed connect */
#define MAX_EVENTS  256

/* ---------------------------------------------------------------- time */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ----------------------------------------------------------- histogram */
/*
 * Log-linear histogram of nanoseconds: values below 128 have one bucket
 * each, above that every power of two is split into 64 buckets (relative
 * error < 1.6%, reported at the bucket's midpoint).  Values are clamped to
 * 2^40 ns (about 18 minutes).  Fixed size, no allocation per sample.
 */
#define H_SUB_BITS  7
#define H_SUB       (1u << H_SUB_BITS)          /* 128 */
#define H_HALF      (H_SUB >> 1)                /* 64 */
#define H_MAX_BITS  40
#define H_BUCKETS   (H_SUB + (H_MAX_BITS - H_SUB_BITS + 1) * H_HALF)

static uint64_t hist[H_BUCKETS];

static inline unsigned h_index(uint64_t v)
{
    if (v >= (1ull << H_MAX_BITS))
        v = (1ull << H_MAX_BITS) - 1;
    if (v < H_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - (H_SUB_BITS - 1);    /* v >> shift in [64, 127] */
    return H_SUB + (shift - 1) * H_HALF + (unsigned)((v >> shift) - H_HALF);
}

static double h_value(unsigned idx)
{
    if (idx < H_SUB)
        return (double)idx;
    unsigned shift = (idx - H_SUB) / H_HALF + 1;
    uint64_t m = (idx - H_SUB) % H_HALF + H_HALF;
    double lo = (double)(m << shift), hi = (double)(((m + 1) << shift) - 1);
    return (lo + hi) / 2.0;
}

/* Value (ns) at percentile p (0..100) of n samples. */
static double h_percentile(uint64_t n, double p)
{
    if (n == 0)
        return -1;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)n + 0.5);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    uint64_t seen = 0;
    for (unsigned i = 0; i < H_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= rank)
            return h_value(i);
    }
    return h_value(H_BUCKETS - 1);
}

/* ---------------------------------------------------------- connection */

enum cstate {
    C_IDLE,         /* no socket: waiting for retry_at */
    C_CONNECTING,
    C_OPEN,
};

enum pstate {
    P_HEADERS,
    P_BODY_LENGTH,
    P_CHUNK_SIZE,
    P_CHUNK_DATA,
    P_CHUNK_END,    /* the CRLF after a chunk's data */
    P_TRAILERS,
    P_UNTIL_CLOSE,
};

struct conn {
    int fd;
    enum cstate state;
    enum pstate pstate;
    uint32_t events;        /* current epoll mask */
    size_t woff;            /* bytes of the request written */
    uint64_t t_start;       /* first write of the current request */
    uint64_t retry_at;
    uint64_t served;        /* answers completed on this socket */
    uint64_t resp_bytes;    /* bytes of the current answer seen so far */
    uint64_t remaining;     /* body or chunk bytes still to come */
    int status;
    int keepalive;
    size_t hscan;           /* header scan resume offset, relative to rpos */
    size_t rpos, rlen;
    char *rbuf;
};

/* ------------------------------------------------------------- globals */

static int epfd;
static struct addrinfo *addr;
static char *request;
static size_t request_len;
static int is_head;
static uint64_t deadline;
static int stopping;
static int pending_retries;

static uint64_t n_requests, n_non2xx, n_reconnects;
static uint64_t e_connect, e_read, e_write, e_parse;

/* --------------------------------------------------------------- utils */

static void die_usage(const char *msg)
{
    if (msg)
        fprintf(stderr, "httpload: %s\n", msg);
    fprintf(stderr,
            "usage: httpload -c CONNECTIONS -d SECONDS [-m METHOD] "
            "[-H 'Name: value']... http://host[:port]/path[?query]\n");
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "httpload: out of memory\n");
        exit(1);
    }
    return p;
}

/* Case-insensitive: does the comma-separated list [v, v+n) hold token tok? */
static int has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return 1;
    }
    return 0;
}

/* Is chunked the last coding of the comma-separated list [v, v+n)? */
static int last_token_is_chunked(const char *v, size_t n)
{
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == ','))
        n--;
    size_t s = n;
    while (s > 0 && v[s - 1] != ',')
        s--;
    while (s < n && (v[s] == ' ' || v[s] == '\t'))
        s++;
    return n - s == 7 && strncasecmp(v + s, "chunked", 7) == 0;
}

/* ------------------------------------------------------ connection ops */

static void conn_connect(struct conn *c);

static void set_events(struct conn *c, uint32_t ev)
{
    if (c->events == ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e) == 0)
        c->events = ev;
}

static void reset_parser(struct conn *c)
{
    c->pstate = P_HEADERS;
    c->resp_bytes = 0;
    c->remaining = 0;
    c->status = 0;
    c->keepalive = 1;
    c->hscan = 0;
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0) {
        close(c->fd);   /* also removes it from the epoll set */
        c->fd = -1;
    }
    c->state = C_IDLE;
    c->rpos = c->rlen = 0;
    c->served = 0;
    reset_parser(c);
}

static void schedule_retry(struct conn *c)
{
    conn_close(c);
    c->retry_at = now_ns() + RETRY_NS;
    pending_retries++;
}

/* Drop the socket and open a new one at once (after Connection: close,
 * or after an error on an established connection). */
static void conn_reopen(struct conn *c)
{
    conn_close(c);
    if (!stopping)
        conn_connect(c);
}

/* Write (the rest of) the request.  Returns 0, or -1 when the connection
 * was dropped. */
static int send_request(struct conn *c)
{
    if (c->woff == 0)
        c->t_start = now_ns();
    while (c->woff < request_len) {
        ssize_t n = send(c->fd, request + c->woff, request_len - c->woff,
                         MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_events(c, EPOLLIN | EPOLLOUT);
            return 0;
        }
        e_write++;
        conn_reopen(c);
        return -1;
    }
    set_events(c, EPOLLIN);
    return 0;
}

static int start_request(struct conn *c)
{
    c->woff = 0;
    reset_parser(c);
    return send_request(c);
}

static void conn_connect(struct conn *c)
{
    int fd = socket(addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    addr->ai_protocol);
    if (fd < 0) {
        e_connect++;
        c->retry_at = now_ns() + RETRY_NS;
        c->state = C_IDLE;
        pending_retries++;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->rpos = c->rlen = 0;
    c->served = 0;
    reset_parser(c);
    int r = connect(fd, addr->ai_addr, addr->ai_addrlen);
    if (r < 0 && errno != EINPROGRESS) {
        e_connect++;
        schedule_retry(c);
        return;
    }
    c->events = EPOLLIN | EPOLLOUT;
    struct epoll_event e = {.events = c->events, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
        perror("httpload: epoll_ctl");
        exit(1);
    }
    c->state = C_CONNECTING;
    if (r == 0) {
        c->state = C_OPEN;
        start_request(c);
    }
}

/* ------------------------------------------------------------- parsing */

/* Parse the header block [h, h+len) (status line first, blank line
 * included).  Returns 0, or -1 on a malformed answer. */
static int parse_head(struct conn *c, const char *h, size_t len)
{
    const char *end = h + len;
    const char *eol = memchr(h, '\n', len);
    if (!eol || eol - h < 12 || memcmp(h, "HTTP/1.", 7) != 0 ||
        (h[7] != '0' && h[7] != '1') || h[8] != ' ' ||
        h[9] < '0' || h[9] > '9' || h[10] < '0' || h[10] > '9' ||
        h[11] < '0' || h[11] > '9')
        return -1;
    int minor = h[7] - '0';
    c->status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');

    int conn_close_ = 0, conn_keep = 0, chunked = 0, te = 0, have_len = 0;
    uint64_t length = 0;

    const char *p = eol + 1;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            nl = end;
        const char *le = nl;
        if (le > p && le[-1] == '\r')
            le--;
        if (le == p)
            break;                      /* the blank line */
        if (*p == ' ' || *p == '\t') {  /* obsolete line folding: ignore */
            p = nl + 1;
            continue;
        }
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (!colon)
            return -1;
        size_t nlen = (size_t)(colon - p);
        const char *v = colon + 1;
        while (v < le && (*v == ' ' || *v == '\t'))
            v++;
        const char *ve = le;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t vlen = (size_t)(ve - v);

        if (nlen == 14 && strncasecmp(p, "content-length", 14) == 0) {
            if (vlen == 0)
                return -1;
            uint64_t x = 0;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9' || x > (UINT64_MAX - 9) / 10)
                    return -1;
                x = x * 10 + (uint64_t)(v[i] - '0');
            }
            if (have_len && x != length)
                return -1;
            length = x;
            have_len = 1;
        } else if (nlen == 17 && strncasecmp(p, "transfer-encoding", 17) == 0) {
            te = 1;
            chunked = last_token_is_chunked(v, vlen);
        } else if (nlen == 10 && strncasecmp(p, "connection", 10) == 0) {
            if (has_token(v, vlen, "close"))
                conn_close_ = 1;
            if (has_token(v, vlen, "keep-alive"))
                conn_keep = 1;
        }
        p = nl + 1;
    }

    if (conn_close_)
        c->keepalive = 0;
    else if (minor == 0)
        c->keepalive = conn_keep;
    else
        c->keepalive = 1;

    if (c->status >= 100 && c->status < 200 && c->status != 101)
        return 0;                       /* interim: caller skips it */
    if (is_head || c->status == 204 || c->status == 304 ||
        (c->status >= 100 && c->status < 200)) {
        c->remaining = 0;
        c->pstate = P_BODY_LENGTH;
        if (c->status == 101)
            c->keepalive = 0;           /* the connection is no longer HTTP */
    } else if (te) {
        if (chunked) {
            c->pstate = P_CHUNK_SIZE;
        } else {
            c->pstate = P_UNTIL_CLOSE;
            c->keepalive = 0;
        }
    } else if (have_len) {
        c->remaining = length;
        c->pstate = P_BODY_LENGTH;
    } else {
        c->pstate = P_UNTIL_CLOSE;
        c->keepalive = 0;
    }
    return 0;
}

/* Find the end of the header block, scanning from rpos + hscan.  Returns the
 * offset just past the blank line (relative to rpos), or 0 if incomplete. */
static size_t find_head_end(struct conn *c)
{
    const char *b = c->rbuf + c->rpos;
    size_t n = c->rlen - c->rpos;
    size_t s = c->hscan;
    while (s < n) {
        const char *q = memchr(b + s, '\n', n - s);
        if (!q) {
            c->hscan = n;
            return 0;
        }
        size_t i = (size_t)(q - b);
        if (i + 1 >= n) {
            c->hscan = i;
            return 0;
        }
        if (b[i + 1] == '\n')
            return i + 2;
        if (b[i + 1] == '\r') {
            if (i + 2 >= n) {
                c->hscan = i;
                return 0;
            }
            if (b[i + 2] == '\n')
                return i + 3;
        }
        s = i + 1;
    }
    c->hscan = n;
    return 0;
}

/* Up to avail bytes of the body still owed, skipped; returns what is
 * still owed after them. */
static uint64_t skip_body(struct conn *c, uint64_t avail)
{
    uint64_t k = avail < c->remaining ? avail : c->remaining;
    c->rpos += (size_t)k;
    c->remaining -= k;
    c->resp_bytes += k;
    return c->remaining;
}

/* One line at rpos (without its CRLF) into line and llen; consumes it.
 * Returns 1 when found, 0 when incomplete, -1 when too long. */
static int take_line(struct conn *c, const char **line, size_t *llen)
{
    const char *b = c->rbuf + c->rpos;
    size_t n = c->rlen - c->rpos;
    const char *q = memchr(b, '\n', n);
    if (!q)
        return n > LINE_MAX_ ? -1 : 0;
    size_t l = (size_t)(q - b);
    c->rpos += l + 1;
    c->resp_bytes += l + 1;
    if (l > 0 && b[l - 1] == '\r')
        l--;
    *line = b;
    *llen = l;
    return 1;
}

enum { R_MORE = 0, R_DROPPED = -1 };

/* An answer is complete.  Returns R_MORE, or R_DROPPED if the socket went. */
static int complete(struct conn *c)
{
    uint64_t t = now_ns();
    if (t >= deadline) {
        stopping = 1;
        return R_MORE;
    }
    hist[h_index(t - c->t_start)]++;
    n_requests++;
    if (c->status < 200 || c->status >= 400)
        n_non2xx++;
    c->served++;
    if (!c->keepalive) {
        n_reconnects++;
        conn_reopen(c);
        return R_DROPPED;
    }
    return start_request(c) < 0 ? R_DROPPED : R_MORE;
}

static int parse_error(struct conn *c)
{
    e_parse++;
    conn_reopen(c);
    return R_DROPPED;
}

/* Consume what is buffered.  Returns R_MORE or R_DROPPED. */
static int process(struct conn *c)
{
    for (;;) {
        size_t avail = c->rlen - c->rpos;
        switch (c->pstate) {
        case P_HEADERS: {
            /* tolerate empty lines before the status line */
            while (avail > 0 && c->hscan == 0 &&
                   (c->rbuf[c->rpos] == '\r' || c->rbuf[c->rpos] == '\n')) {
                if (c->rbuf[c->rpos] == '\r' &&
                    (avail < 2 || c->rbuf[c->rpos + 1] != '\n'))
                    break;
                size_t k = c->rbuf[c->rpos] == '\r' ? 2 : 1;
                c->rpos += k;
                avail -= k;
            }
            if (avail == 0)
                goto more;
            size_t hend = find_head_end(c);
            if (hend == 0) {
                if (avail >= RBUF_SIZE)
                    return parse_error(c);      /* header block too large */
                goto more;
            }
            c->resp_bytes += hend;
            if (parse_head(c, c->rbuf + c->rpos, hend) < 0)
                return parse_error(c);
            c->rpos += hend;
            c->hscan = 0;
            if (c->status >= 100 && c->status < 200 && c->status != 101) {
                c->resp_bytes = 0;
                continue;                       /* interim answer */
            }
            break;
        }
        case P_BODY_LENGTH: {
            if (skip_body(c, avail) > 0)
                goto more;
            if (complete(c) == R_DROPPED)
                return R_DROPPED;
            if (stopping)
                return R_MORE;
            break;
        }
        case P_CHUNK_SIZE: {
            const char *line;
            size_t l;
            int r = take_line(c, &line, &l);
            if (r < 0)
                return parse_error(c);
            if (r == 0)
                goto more;
            uint64_t size = 0;
            size_t i = 0;
            for (; i < l; i++) {
                char ch = line[i];
                int d;
                if (ch >= '0' && ch <= '9')
                    d = ch - '0';
                else if (ch >= 'a' && ch <= 'f')
                    d = ch - 'a' + 10;
                else if (ch >= 'A' && ch <= 'F')
                    d = ch - 'A' + 10;
                else
                    break;
                if (size >> 60)
                    return parse_error(c);
                size = size * 16 + (uint64_t)d;
            }
            if (i == 0)
                return parse_error(c);
            /* the rest may be whitespace and ;extensions: ignored */
            if (i < l && line[i] != ';' && line[i] != ' ' && line[i] != '\t')
                return parse_error(c);
            if (size == 0) {
                c->pstate = P_TRAILERS;
            } else {
                c->remaining = size;
                c->pstate = P_CHUNK_DATA;
            }
            break;
        }
        case P_CHUNK_DATA: {
            if (skip_body(c, avail) > 0)
                goto more;
            c->pstate = P_CHUNK_END;
            break;
        }
        case P_CHUNK_END: {
            const char *line;
            size_t l;
            int r = take_line(c, &line, &l);
            if (r < 0 || (r > 0 && l != 0))
                return parse_error(c);
            if (r == 0)
                goto more;
            c->pstate = P_CHUNK_SIZE;
            break;
        }
        case P_TRAILERS: {
            const char *line;
            size_t l;
            int r = take_line(c, &line, &l);
            if (r < 0)
                return parse_error(c);
            if (r == 0)
                goto more;
            if (l != 0)
                break;                          /* a trailer field: skip */
            if (complete(c) == R_DROPPED)
                return R_DROPPED;
            if (stopping)
                return R_MORE;
            break;
        }
        case P_UNTIL_CLOSE:
            c->resp_bytes += avail;
            c->rpos = c->rlen;
            goto more;
        }
    }
more:
    if (c->rpos == c->rlen) {
        c->rpos = c->rlen = 0;
    } else if (c->rpos > 0) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    return R_MORE;
}

static void on_eof(struct conn *c)
{
    if (c->pstate == P_UNTIL_CLOSE) {
        c->keepalive = 0;
        complete(c);            /* reopens the connection */
        return;
    }
    if (c->pstate == P_HEADERS && c->resp_bytes == 0 && c->rlen == c->rpos &&
        c->served > 0) {
        /* The server closed an idle keep-alive connection as the request
         * was on its way: not an error, send it again on a new socket. */
        n_reconnects++;
        conn_reopen(c);
        return;
    }
    e_read++;
    conn_reopen(c);
}

static void on_readable(struct conn *c)
{
    for (;;) {
        size_t space = RBUF_SIZE - c->rlen;
        ssize_t n = read(c->fd, c->rbuf + c->rlen, space);
        if (n > 0) {
            c->rlen += (size_t)n;
            if (process(c) == R_DROPPED || stopping)
                return;
            if ((size_t)n < space)
                return;         /* probably drained: epoll will say if not */
            continue;
        }
        if (n == 0) {
            on_eof(c);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        e_read++;
        conn_reopen(c);
        return;
    }
}

static void on_event(struct conn *c, uint32_t ev)
{
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err == 0 && (ev & (EPOLLERR | EPOLLHUP)) && !(ev & EPOLLOUT))
            err = ECONNREFUSED;
        if (err) {
            e_connect++;
            schedule_retry(c);
            return;
        }
        if (!(ev & EPOLLOUT))
            return;
        c->state = C_OPEN;
        start_request(c);
        return;
    }
    if (c->state != C_OPEN)
        return;
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        int fd = c->fd;
        on_readable(c);
        if (c->fd != fd || c->state != C_OPEN || stopping)
            return;     /* the event was for the socket just dropped */
    }
    if ((ev & EPOLLOUT) && c->woff < request_len)
        send_request(c);
}

/* ---------------------------------------------------------------- main */

struct url {
    char *host;         /* without brackets */
    char *hostport;     /* for the Host header */
    char *port;
    char *target;       /* path?query */
};

static void parse_url(const char *s, struct url *u)
{
    if (strncasecmp(s, "http://", 7) != 0)
        die_usage("URL must start with http:// (no TLS)");
    s += 7;
    const char *slash = s + strcspn(s, "/?#");
    const char *auth = s;
    size_t alen = (size_t)(slash - s);
    if (alen == 0)
        die_usage("URL has no host");
    const char *at = memchr(auth, '@', alen);
    if (at)
        die_usage("user info in the URL is not supported");
    u->hostport = strndup(auth, alen);
    const char *hs, *he, *ps = NULL;
    if (auth[0] == '[') {
        const char *rb = memchr(auth, ']', alen);
        if (!rb)
            die_usage("bad IPv6 literal in URL");
        hs = auth + 1;
        he = rb;
        if (rb + 1 < slash) {
            if (rb[1] != ':')
                die_usage("bad URL authority");
            ps = rb + 2;
        }
    } else {
        hs = auth;
        const char *colon = memchr(auth, ':', alen);
        he = colon ? colon : slash;
        if (colon)
            ps = colon + 1;
    }
    if (he == hs)
        die_usage("URL has no host");
    u->host = strndup(hs, (size_t)(he - hs));
    if (ps && ps < slash) {
        u->port = strndup(ps, (size_t)(slash - ps));
        for (const char *q = u->port; *q; q++)
            if (*q < '0' || *q > '9')
                die_usage("bad port in URL");
    } else {
        u->port = strdup("80");
    }
    const char *frag = strchr(slash, '#');
    size_t tlen = frag ? (size_t)(frag - slash) : strlen(slash);
    if (tlen == 0 || slash[0] != '/') {
        u->target = xmalloc(tlen + 2);
        u->target[0] = '/';
        memcpy(u->target + 1, slash, tlen);
        u->target[tlen + 1] = 0;
    } else {
        u->target = strndup(slash, tlen);
    }
}

/* The first address that accepts a connection ("localhost" may resolve to
 * ::1 first while the server listens on 127.0.0.1 only), else the first. */
static struct addrinfo *pick_address(struct addrinfo *list)
{
    if (!list->ai_next)
        return list;
    for (struct addrinfo *a = list; a; a = a->ai_next) {
        int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        struct timeval tv = {.tv_sec = 2};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        int ok = connect(fd, a->ai_addr, a->ai_addrlen) == 0;
        close(fd);
        if (ok)
            return a;
    }
    return list;
}

static void print_ms(const char *key, double ns, int last)
{
    if (ns < 0)
        printf("\"%s\": null%s", key, last ? "" : ", ");
    else
        printf("\"%s\": %.3f%s", key, ns / 1e6, last ? "" : ", ");
}

int main(int argc, char **argv)
{
    long nconn = 0;
    double seconds = 0;
    const char *method = "GET";
    const char **hdrs = xmalloc(sizeof(char *) * (size_t)(argc + 1));
    int nhdrs = 0, have_host = 0;
    int opt;
    char *endp;

    while ((opt = getopt(argc, argv, "c:d:m:H:h")) != -1) {
        switch (opt) {
        case 'c':
            nconn = strtol(optarg, &endp, 10);
            if (*endp || nconn < 1 || nconn > 1000000)
                die_usage("-c wants a positive number of connections");
            break;
        case 'd':
            seconds = strtod(optarg, &endp);
            if (*endp == 's' && endp[1] == 0)
                endp++;
            if (*endp || !(seconds > 0))
                die_usage("-d wants a positive number of seconds");
            break;
        case 'm':
            method = optarg;
            if (!*method || strpbrk(method, " \t\r\n"))
                die_usage("bad method");
            break;
        case 'H': {
            const char *colon = strchr(optarg, ':');
            if (!colon || colon == optarg || strpbrk(optarg, "\r\n"))
                die_usage("-H wants 'Name: value'");
            if ((size_t)(colon - optarg) == 4 && strncasecmp(optarg, "host", 4) == 0)
                have_host = 1;
            hdrs[nhdrs++] = optarg;
            break;
        }
        case 'h':
            die_usage(NULL);
            break;
        default:
            die_usage(NULL);
        }
    }
    if (optind != argc - 1)
        die_usage(optind >= argc ? "missing URL" : "too many arguments");
    if (nconn == 0 || seconds == 0)
        die_usage("-c and -d are required");

    struct url u;
    parse_url(argv[optind], &u);
    is_head = strcasecmp(method, "HEAD") == 0;

    /* the request, built once */
    size_t cap = strlen(method) + strlen(u.target) + strlen(u.hostport) + 64;
    for (int i = 0; i < nhdrs; i++)
        cap += strlen(hdrs[i]) + 2;
    request = xmalloc(cap);
    size_t off = (size_t)snprintf(request, cap, "%s %s HTTP/1.1\r\n", method, u.target);
    if (!have_host) {
        /* the port is omitted when it is the default one */
        const char *hp = u.hostport;
        size_t hl = strlen(hp);
        if (hl > 3 && strcmp(hp + hl - 3, ":80") == 0)
            hl -= 3;
        off += (size_t)snprintf(request + off, cap - off, "Host: %.*s\r\n", (int)hl, hp);
    }
    for (int i = 0; i < nhdrs; i++)
        off += (size_t)snprintf(request + off, cap - off, "%s\r\n", hdrs[i]);
    off += (size_t)snprintf(request + off, cap - off, "\r\n");
    request_len = off;

    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(u.host, u.port, &hints, &addr);
    if (gai != 0) {
        fprintf(stderr, "httpload: cannot resolve %s: %s\n", u.host, gai_strerror(gai));
        return 1;
    }
    addr = pick_address(addr);

    /* room for one descriptor per connection */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconn + 64) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (rlim_t)nconn + 64
                          ? (rlim_t)nconn + 64 : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        perror("httpload: epoll_create1");
        return 1;
    }

    struct conn *conns = calloc((size_t)nconn, sizeof *conns);
    if (!conns) {
        fprintf(stderr, "httpload: out of memory\n");
        return 1;
    }
    uint64_t start = now_ns();
    deadline = start + (uint64_t)(seconds * 1e9);
    for (long i = 0; i < nconn; i++) {
        conns[i].fd = -1;
        conns[i].rbuf = xmalloc(RBUF_SIZE);
        conn_connect(&conns[i]);
    }

    struct epoll_event events[MAX_EVENTS];
    while (!stopping) {
        uint64_t t = now_ns();
        if (t >= deadline)
            break;
        uint64_t wait_ns = deadline - t;
        if (pending_retries > 0) {
            uint64_t soonest = UINT64_MAX;
            pending_retries = 0;
            for (long i = 0; i < nconn; i++) {
                struct conn *c = &conns[i];
                if (c->state != C_IDLE)
                    continue;
                if (c->retry_at <= t) {
                    conn_connect(c);
                } else {
                    pending_retries++;
                    if (c->retry_at < soonest)
                        soonest = c->retry_at;
                }
            }
            if (pending_retries > 0 && soonest - t < wait_ns)
                wait_ns = soonest - t;
        }
        int timeout_ms = (int)((wait_ns + 999999) / 1000000);
        int n = epoll_wait(epfd, events, MAX_EVENTS, timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("httpload: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n && !stopping; i++)
            on_event(events[i].data.ptr, events[i].events);
    }
    uint64_t end = now_ns();
    if (end > deadline)
        end = deadline;     /* answers after the deadline are not counted */
    double elapsed = (double)(end - start) / 1e9;

    uint64_t errors = e_connect + e_read + e_write + e_parse;
    printf("{\"requests\": %llu, \"seconds\": %.3f, \"rps\": %.1f, "
           "\"non2xx\": %llu, \"errors\": %llu, ",
           (unsigned long long)n_requests, elapsed,
           elapsed > 0 ? (double)n_requests / elapsed : 0.0,
           (unsigned long long)n_non2xx, (unsigned long long)errors);
    print_ms("p50_ms", h_percentile(n_requests, 50), 0);
    print_ms("p90_ms", h_percentile(n_requests, 90), 0);
    print_ms("p99_ms", h_percentile(n_requests, 99), 0);
    printf("\"connections\": %ld, \"reconnects\": %llu, "
           "\"errors_connect\": %llu, \"errors_read\": %llu, "
           "\"errors_write\": %llu, \"errors_parse\": %llu}\n",
           nconn, (unsigned long long)n_reconnects,
           (unsigned long long)e_connect, (unsigned long long)e_read,
           (unsigned long long)e_write, (unsigned long long)e_parse);
    fflush(stdout);
    return 0;
}
