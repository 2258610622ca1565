/*
 * softskf: a software SKF (GM/T 0016-2012) library for card-agent's test suite.
 *
 * TEST INFRASTRUCTURE, NOT A PRODUCT. Private keys and PINs are kept in clear in a text
 * store file; nothing here protects anything. It exists so that card/skf (the ctypes
 * binding and SkfDriver) can be tested against a real shared library loaded with
 * dlopen, with the behaviours vendor libraries differ in, and with faults on demand.
 *
 * It implements the subset card/skf uses: devices, applications, containers, PINs,
 * certificates, public keys, SM2 (SKF_ECCSignData over a given e) and RSA
 * (SKF_RSASignData: PKCS#1 v1.5 type-1 padding of the data as given) signatures,
 * SKF_DigestInit/SKF_Digest (SM3 with Z), device events.
 *
 * Store file ($SOFTSKF_STORE, else "<this library's file>.store", so that a copy of the
 * library in a test agent's directory has a store of its own: one process can then
 * load several independent softskf instances), one "keyword value" per line, written
 * by tests/skf/softskf/store.py; the PIN counters are written back on every change:
 *
 *     softskf-store 1
 *     device <name>            serial / label / manufacturer <text>
 *     application <name>       user-pin / admin-pin <max> <left> <value>
 *     container <name>         type <1 RSA | 2 ECC>
 *                              sign-cert / sign-key / enc-cert / enc-key <hex DER>
 *
 * Control file ($SOFTSKF_CONTROL, default "<store>.control"), re-read on every call,
 * "key=value" per line; tests/skf/softskf/control.py writes it:
 *
 *     present=0|1              the devices are plugged in (default 1)
 *     generation=<n>           bumped on every re-insertion: older handles go stale
 *     size_convention=ok|too_small   how a NULL-buffer size query answers
 *     digest=0|1               SKF_DigestInit supported (default 1)
 *     cancel_latch=0|1         SKF_CancelWaitForDevEvent without a wait is remembered
 *     cancel_rc=<code>         what a cancelled SKF_WaitForDevEvent returns (default 0)
 *     sig_align=right|left     where SKF_ECCSignData puts r and s (the standard: right)
 *     fail=<function>:<code>   that function returns that code (repeatable)
 *     hang=<function>          that function blocks until the line is removed; while it
 *                              blocks, "<control file>.hanging" holds its name
 *     wrong_size=<function>:short|overflow   a size query answers 8 bytes too few /
 *                              a fetch reports 64 bytes more than the buffer holds
 *     delay=<function>:<ms>    that function takes that long (repeatable): a slow token
 *     corrupt_signature=1      SKF_ECCSignData / SKF_RSASignData flip one bit of what
 *                              they return (a faulty token)
 *
 * For the tests, besides SOFTSKF_Reset / SOFTSKF_OpenHandles / SOFTSKF_Layout:
 * SOFTSKF_CallCount(name) counts the calls of an SKF function since the last reset (every
 * call that got past its hang, whatever it returned; SKF_WaitForDevEvent and
 * SKF_CancelWaitForDevEvent are not counted), SOFTSKF_UserLoggedIn() says whether any
 * application's user PIN is verified.
 *
 * Compiled by tests/skf/softskf/build.py; -DSOFTSKF_NO_DEV_EVENTS leaves out
 * SKF_WaitForDevEvent and SKF_CancelWaitForDevEvent (a library without them).
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#if OPENSSL_VERSION_NUMBER < 0x30000000L
#error "softskf needs OpenSSL 3"
#endif

/* --- GM/T 0016 types (sgd.h / skf.h), 32-bit ULONG and BOOL as vendors ship them ------ */

typedef uint32_t ULONG;
typedef uint32_t BOOL;
typedef uint8_t BYTE;
typedef char CHAR;
typedef char *LPSTR;
typedef void *HANDLE;
typedef HANDLE DEVHANDLE;
typedef HANDLE HAPPLICATION;
typedef HANDLE HCONTAINER;

#define EXPORT __attribute__((visibility("default")))

#pragma pack(push, 1)
typedef struct { BYTE major; BYTE minor; } VERSION;
typedef struct {
    VERSION Version;
    CHAR Manufacturer[64];
    CHAR Issuer[64];
    CHAR Label[32];
    CHAR SerialNumber[32];
    VERSION HWVersion;
    VERSION FirmwareVersion;
    ULONG AlgSymCap;
    ULONG AlgAsymCap;
    ULONG AlgHashCap;
    ULONG DevAuthAlgId;
    ULONG TotalSpace;
    ULONG FreeSpace;
    ULONG MaxECCBufferSize;
    ULONG MaxBufferSize;
    BYTE Reserved[64];
} DEVINFO;
typedef struct { ULONG BitLen; BYTE XCoordinate[64]; BYTE YCoordinate[64]; } ECCPUBLICKEYBLOB;
typedef struct { BYTE r[64]; BYTE s[64]; } ECCSIGNATUREBLOB;
typedef struct {
    ULONG AlgID;
    ULONG BitLen;
    BYTE Modulus[256];
    BYTE PublicExponent[4];
} RSAPUBLICKEYBLOB;
#pragma pack(pop)

#define SAR_OK 0x00000000
#define SAR_FAIL 0x0A000001
#define SAR_NOTSUPPORTYETERR 0x0A000003
#define SAR_FILEERR 0x0A000004
#define SAR_INVALIDHANDLEERR 0x0A000005
#define SAR_INVALIDPARAMERR 0x0A000006
#define SAR_KEYUSAGEERR 0x0A00000A
#define SAR_MEMORYERR 0x0A00000E
#define SAR_INDATALENERR 0x0A000010
#define SAR_CERTNOTFOUNTERR 0x0A00001C
#define SAR_KEYNOTFOUNTERR 0x0A00001B
#define SAR_BUFFER_TOO_SMALL 0x0A000020
#define SAR_DEVICE_REMOVED 0x0A000023
#define SAR_PIN_INCORRECT 0x0A000024
#define SAR_PIN_LOCKED 0x0A000025
#define SAR_PIN_LEN_RANGE 0x0A000027
#define SAR_USER_TYPE_INVALID 0x0A00002A
#define SAR_USER_NOT_LOGGED_IN 0x0A00002D
#define SAR_APPLICATION_NOT_EXISTS 0x0A00002E
#define SAR_FILE_NOT_EXIST 0x0A000031

#define SGD_SM3 0x00000001
#define SGD_SHA1 0x00000002
#define SGD_SHA256 0x00000004
#define SGD_RSA 0x00010000
#define SGD_SM2_1 0x00020100
#define SGD_SM2_3 0x00020800
#define SGD_SM4_ECB 0x00000401
#define SGD_SM4_CBC 0x00000402

#define CONTAINER_RSA 1
#define CONTAINER_ECC 2
#define PIN_MIN 6
#define PIN_MAX 16

/* --- the store ------------------------------------------------------------------------ */

#define MAX_DEVICES 4
#define MAX_APPS 8
#define MAX_CONTAINERS 16
#define NAME_LEN 64
#define BLOB_MAX 4096

struct blob { size_t len; BYTE data[BLOB_MAX]; };
struct pin { ULONG max; ULONG left; char value[PIN_MAX + 1]; };
struct device { char name[NAME_LEN]; char serial[33]; char label[33]; char manufacturer[65]; };
struct app { int dev; char name[NAME_LEN]; struct pin pins[2]; /* 0 admin, 1 user */ };
struct container {
    int app;
    char name[NAME_LEN];
    ULONG type;
    struct blob sign_cert, sign_key, enc_cert, enc_key;
};
struct store {
    int ndev, napp, ncont;
    struct device dev[MAX_DEVICES];
    struct app app[MAX_APPS];
    struct container cont[MAX_CONTAINERS];
};

/* --- the control file ----------------------------------------------------------------- */

#define MAX_FAILS 8
#define MAX_DELAYS 8
struct control {
    int present;
    unsigned generation;
    int too_small;
    int digest;
    int cancel_latch;
    ULONG cancel_rc;
    int sig_left;
    int nfail;
    char fail_fn[MAX_FAILS][48];
    ULONG fail_rc[MAX_FAILS];
    char hang_fn[48];
    char wrong_size_fn[48];
    int wrong_size_overflow; /* 0: short, 1: overflow */
    int ndelay;
    char delay_fn[MAX_DELAYS][48];
    long delay_ms[MAX_DELAYS];
    int corrupt_signature;
};

/* --- handles -------------------------------------------------------------------------- */

enum kind { H_DEV = 1, H_APP, H_CONT, H_HASH };
#define HANDLE_MAGIC 0x534b4621u
#define MAX_HANDLES 256
struct handle {
    uint32_t magic;
    enum kind kind;
    int dev, app, cont;
    unsigned generation;
    EVP_MD_CTX *md;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;   /* every call's state */
static pthread_mutex_t g_event_lock = PTHREAD_MUTEX_INITIALIZER; /* presence and events */
static struct store g_store;
static struct handle *g_handles[MAX_HANDLES];
static int g_login[MAX_APPS]; /* 0 none, 1 admin, 2 user */

/* Presence as last observed, the events not yet reported, the wait/cancel state. */
static int g_observed;
static int g_last_present;
static unsigned g_last_generation;
#define MAX_EVENTS 64
struct event { ULONG kind; char name[NAME_LEN]; };
static struct event g_events[MAX_EVENTS];
static int g_nevents;
#ifndef SOFTSKF_NO_DEV_EVENTS
static int g_waiting;
static int g_cancel_pending;
#endif

/* --- small helpers -------------------------------------------------------------------- */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void copy_text(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int parse_hex(struct blob *out, const char *hex)
{
    size_t n = strlen(hex);
    if (n % 2 || n / 2 > BLOB_MAX)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out->data[i] = (BYTE)(hi << 4 | lo);
    }
    out->len = n / 2;
    return 0;
}

static void write_hex(FILE *f, const char *key, const struct blob *b)
{
    if (!b->len)
        return;
    fprintf(f, "%s ", key);
    for (size_t i = 0; i < b->len; i++)
        fprintf(f, "%02x", b->data[i]);
    fputc('\n', f);
}

/* "<the file this library was loaded from>.store", found once. */
static char g_own_store[2048]; /* shorter than the paths derived from it */
static pthread_once_t g_own_store_once = PTHREAD_ONCE_INIT;

static void find_own_store(void)
{
    Dl_info info;
    if (dladdr((void *)&find_own_store, &info) && info.dli_fname && *info.dli_fname &&
        snprintf(g_own_store, sizeof g_own_store, "%s.store", info.dli_fname) >=
            (int)sizeof g_own_store)
        g_own_store[0] = '\0'; /* too long a path: no store of its own */
}

static int g_store_is_own; /* the store path is the library's own: it may be missing */

static const char *store_path(void)
{
    const char *p = getenv("SOFTSKF_STORE");
    if (p && *p) {
        g_store_is_own = 0;
        return p;
    }
    pthread_once(&g_own_store_once, find_own_store);
    g_store_is_own = 1;
    return *g_own_store ? g_own_store : NULL;
}

/* --- reading and writing the store ---------------------------------------------------- */

static int parse_pin(struct pin *pin, const char *value)
{
    unsigned max, left;
    char secret[64];
    if (sscanf(value, "%u %u %63s", &max, &left, secret) != 3 || left > max ||
        strlen(secret) > PIN_MAX)
        return -1;
    pin->max = max;
    pin->left = left;
    copy_text(pin->value, sizeof pin->value, secret);
    return 0;
}

/* 0 on success (an unset store path is an empty store), -1 when the file is unusable. */
static int load_store(struct store *s)
{
    memset(s, 0, sizeof *s);
    const char *path = store_path();
    if (!path)
        return 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return g_store_is_own && errno == ENOENT ? 0 : -1; /* no store of its own: empty */
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int rc = 0, header = 0;
    struct device *dev = NULL;
    struct app *app = NULL;
    struct container *cont = NULL;
    while (rc == 0 && (got = getline(&line, &cap, f)) >= 0) {
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
            line[--got] = '\0';
        if (!got || line[0] == '#')
            continue;
        char *value = strchr(line, ' ');
        if (value)
            *value++ = '\0';
        else
            value = line + got;
        if (!header) {
            header = strcmp(line, "softskf-store") == 0 && strcmp(value, "1") == 0;
            rc = header ? 0 : -1;
        } else if (!strcmp(line, "device")) {
            if (s->ndev == MAX_DEVICES) {
                rc = -1;
                break;
            }
            dev = &s->dev[s->ndev++];
            copy_text(dev->name, sizeof dev->name, value);
            app = NULL;
            cont = NULL;
        } else if (!strcmp(line, "application") && dev) {
            if (s->napp == MAX_APPS) {
                rc = -1;
                break;
            }
            app = &s->app[s->napp++];
            app->dev = (int)(dev - s->dev);
            copy_text(app->name, sizeof app->name, value);
            cont = NULL;
        } else if (!strcmp(line, "container") && app) {
            if (s->ncont == MAX_CONTAINERS) {
                rc = -1;
                break;
            }
            cont = &s->cont[s->ncont++];
            cont->app = (int)(app - s->app);
            copy_text(cont->name, sizeof cont->name, value);
        } else if (!strcmp(line, "serial") && dev) {
            copy_text(dev->serial, sizeof dev->serial, value);
        } else if (!strcmp(line, "label") && dev) {
            copy_text(dev->label, sizeof dev->label, value);
        } else if (!strcmp(line, "manufacturer") && dev) {
            copy_text(dev->manufacturer, sizeof dev->manufacturer, value);
        } else if (!strcmp(line, "user-pin") && app) {
            rc = parse_pin(&app->pins[1], value);
        } else if (!strcmp(line, "admin-pin") && app) {
            rc = parse_pin(&app->pins[0], value);
        } else if (!strcmp(line, "type") && cont) {
            cont->type = (ULONG)strtoul(value, NULL, 10);
        } else if (!strcmp(line, "sign-cert") && cont) {
            rc = parse_hex(&cont->sign_cert, value);
        } else if (!strcmp(line, "sign-key") && cont) {
            rc = parse_hex(&cont->sign_key, value);
        } else if (!strcmp(line, "enc-cert") && cont) {
            rc = parse_hex(&cont->enc_cert, value);
        } else if (!strcmp(line, "enc-key") && cont) {
            rc = parse_hex(&cont->enc_key, value);
        } else {
            rc = -1; /* an unknown keyword or one out of place: refuse the whole file */
        }
    }
    free(line);
    fclose(f);
    return header ? rc : -1;
}

/* Write the whole store next to itself and rename it over (a crash leaves old or new). */
static int save_store(const struct store *s)
{
    const char *path = store_path();
    if (!path)
        return -1;
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return -1;
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "softskf-store 1\n");
    for (int d = 0; d < s->ndev; d++) {
        const struct device *dev = &s->dev[d];
        fprintf(f, "device %s\n", dev->name);
        if (*dev->serial)
            fprintf(f, "serial %s\n", dev->serial);
        if (*dev->label)
            fprintf(f, "label %s\n", dev->label);
        if (*dev->manufacturer)
            fprintf(f, "manufacturer %s\n", dev->manufacturer);
        for (int a = 0; a < s->napp; a++) {
            const struct app *app = &s->app[a];
            if (app->dev != d)
                continue;
            fprintf(f, "application %s\n", app->name);
            const char *names[2] = {"admin-pin", "user-pin"};
            for (int t = 0; t < 2; t++)
                if (app->pins[t].max)
                    fprintf(f, "%s %u %u %s\n", names[t], app->pins[t].max, app->pins[t].left,
                            app->pins[t].value);
            for (int c = 0; c < s->ncont; c++) {
                const struct container *cont = &s->cont[c];
                if (cont->app != a)
                    continue;
                fprintf(f, "container %s\ntype %u\n", cont->name, cont->type);
                write_hex(f, "sign-cert", &cont->sign_cert);
                write_hex(f, "sign-key", &cont->sign_key);
                write_hex(f, "enc-cert", &cont->enc_cert);
                write_hex(f, "enc-key", &cont->enc_key);
            }
        }
    }
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* --- reading the control file --------------------------------------------------------- */

static void control_path(char *out, size_t cap)
{
    const char *p = getenv("SOFTSKF_CONTROL");
    if (p && *p) {
        copy_text(out, cap, p);
    } else if (store_path()) {
        snprintf(out, cap, "%s.control", store_path());
    } else {
        out[0] = '\0';
    }
}

static void read_control(struct control *c)
{
    memset(c, 0, sizeof *c);
    c->present = 1;
    c->digest = 1;
    char path[4096];
    control_path(path, sizeof path);
    FILE *f = *path ? fopen(path, "r") : NULL;
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *value = strchr(line, '=');
        if (!value || line[0] == '#')
            continue;
        *value++ = '\0';
        if (!strcmp(line, "present")) {
            c->present = atoi(value) != 0;
        } else if (!strcmp(line, "generation")) {
            c->generation = (unsigned)strtoul(value, NULL, 10);
        } else if (!strcmp(line, "size_convention")) {
            c->too_small = !strcmp(value, "too_small");
        } else if (!strcmp(line, "digest")) {
            c->digest = atoi(value) != 0;
        } else if (!strcmp(line, "cancel_latch")) {
            c->cancel_latch = atoi(value) != 0;
        } else if (!strcmp(line, "sig_align")) {
            c->sig_left = !strcmp(value, "left");
        } else if (!strcmp(line, "cancel_rc")) {
            c->cancel_rc = (ULONG)strtoul(value, NULL, 0);
        } else if (!strcmp(line, "fail") && c->nfail < MAX_FAILS) {
            char *code = strchr(value, ':');
            if (!code)
                continue;
            *code++ = '\0';
            copy_text(c->fail_fn[c->nfail], sizeof c->fail_fn[0], value);
            c->fail_rc[c->nfail++] = (ULONG)strtoul(code, NULL, 0);
        } else if (!strcmp(line, "hang")) {
            copy_text(c->hang_fn, sizeof c->hang_fn, value);
        } else if (!strcmp(line, "delay") && c->ndelay < MAX_DELAYS) {
            char *ms = strchr(value, ':');
            if (!ms)
                continue;
            *ms++ = '\0';
            copy_text(c->delay_fn[c->ndelay], sizeof c->delay_fn[0], value);
            c->delay_ms[c->ndelay++] = strtol(ms, NULL, 10);
        } else if (!strcmp(line, "corrupt_signature")) {
            c->corrupt_signature = atoi(value) != 0;
        } else if (!strcmp(line, "wrong_size")) {
            char *mode = strchr(value, ':');
            if (mode)
                *mode++ = '\0';
            copy_text(c->wrong_size_fn, sizeof c->wrong_size_fn, value);
            c->wrong_size_overflow = mode && !strcmp(mode, "overflow");
        }
    }
    fclose(f);
}

/* --- presence, events, logins --------------------------------------------------------- */

static void queue_event(ULONG kind, const char *name)
{
    if (g_nevents == MAX_EVENTS) { /* nobody is listening: keep the newest */
        memmove(&g_events[0], &g_events[1], sizeof g_events[0] * (MAX_EVENTS - 1));
        g_nevents--;
    }
    g_events[g_nevents].kind = kind;
    copy_text(g_events[g_nevents].name, NAME_LEN, name);
    g_nevents++;
}

/* Called with g_event_lock held. Compares the control file with what was last seen and
 * queues an event per device for a change: removed, inserted, or (when the generation
 * moved while we did not look) both. A change also ends every login. */
static void observe_locked(const struct control *c, const struct store *s)
{
    if (!g_observed) {
        g_observed = 1;
        g_last_present = c->present;
        g_last_generation = c->generation;
        return;
    }
    int removed = 0, inserted = 0;
    if (g_last_present && !c->present) {
        removed = 1;
    } else if (!g_last_present && c->present) {
        inserted = 1;
    } else if (c->present && c->generation != g_last_generation) {
        removed = inserted = 1;
    }
    g_last_present = c->present;
    g_last_generation = c->generation;
    if (!removed && !inserted)
        return;
    memset(g_login, 0, sizeof g_login);
    for (int d = 0; d < s->ndev; d++) {
        if (removed)
            queue_event(2, s->dev[d].name);
        if (inserted)
            queue_event(1, s->dev[d].name);
    }
}

/* --- entering and leaving a call ------------------------------------------------------ */

/* While a call hangs, "<control file>.hanging" names it, so a test knows the call is in. */
static void hang_if_asked(const char *fn)
{
    struct control c;
    char marker[4200] = "";
    for (;;) {
        read_control(&c);
        if (strcmp(c.hang_fn, fn) != 0)
            break;
        if (!*marker) {
            char path[4096];
            control_path(path, sizeof path);
            snprintf(marker, sizeof marker, "%s.hanging", path);
            FILE *f = fopen(marker, "w");
            if (f) {
                fputs(fn, f);
                fclose(f);
            }
        }
        sleep_ms(20);
    }
    if (*marker)
        unlink(marker);
}

/* Calls per function since the last reset (SOFTSKF_CallCount). */
#define MAX_COUNTED 48
static struct { char fn[48]; unsigned long n; } g_calls[MAX_COUNTED];
static pthread_mutex_t g_calls_lock = PTHREAD_MUTEX_INITIALIZER;

static void count_call(const char *fn)
{
    pthread_mutex_lock(&g_calls_lock);
    for (int i = 0; i < MAX_COUNTED; i++) {
        if (!g_calls[i].fn[0])
            copy_text(g_calls[i].fn, sizeof g_calls[i].fn, fn);
        if (!strcmp(g_calls[i].fn, fn)) {
            g_calls[i].n++;
            break;
        }
    }
    pthread_mutex_unlock(&g_calls_lock);
}

static void delay_if_asked(const struct control *c, const char *fn)
{
    for (int i = 0; i < c->ndelay; i++)
        if (!strcmp(c->delay_fn[i], fn) && c->delay_ms[i] > 0)
            sleep_ms(c->delay_ms[i]);
}

static ULONG forced_failure(const struct control *c, const char *fn)
{
    for (int i = 0; i < c->nfail; i++)
        if (!strcmp(c->fail_fn[i], fn))
            return c->fail_rc[i];
    return SAR_OK;
}

/* Takes g_lock, reads control and store, applies a forced failure. On SAR_OK the caller
 * holds g_lock and must leave through finish(). */
static ULONG begin(const char *fn, struct control *c)
{
    hang_if_asked(fn);
    count_call(fn);
    read_control(c);
    delay_if_asked(c, fn); /* before the lock: a slow call does not hold up the others */
    pthread_mutex_lock(&g_lock);
    read_control(c);
    if (load_store(&g_store) != 0) {
        pthread_mutex_unlock(&g_lock);
        return SAR_FILEERR;
    }
    pthread_mutex_lock(&g_event_lock);
    observe_locked(c, &g_store);
    pthread_mutex_unlock(&g_event_lock);
    ULONG forced = forced_failure(c, fn);
    if (forced != SAR_OK)
        pthread_mutex_unlock(&g_lock);
    return forced;
}

static ULONG finish(ULONG rv)
{
    pthread_mutex_unlock(&g_lock);
    return rv;
}

static struct handle *new_handle(enum kind kind, int dev, int app, int cont, unsigned gen)
{
    for (int i = 0; i < MAX_HANDLES; i++) {
        if (g_handles[i])
            continue;
        struct handle *h = calloc(1, sizeof *h);
        if (!h)
            return NULL;
        *h = (struct handle){HANDLE_MAGIC, kind, dev, app, cont, gen, NULL};
        g_handles[i] = h;
        return h;
    }
    return NULL;
}

static int handle_slot(const void *p, enum kind kind)
{
    for (int i = 0; i < MAX_HANDLES; i++)
        if (p && g_handles[i] == p && g_handles[i]->magic == HANDLE_MAGIC &&
            g_handles[i]->kind == kind)
            return i;
    return -1;
}

/* A live handle of `kind` on a present device of the current generation. */
static ULONG use_handle(const void *p, enum kind kind, const struct control *c,
                        struct handle **out)
{
    int slot = handle_slot(p, kind);
    if (slot < 0)
        return SAR_INVALIDHANDLEERR;
    if (!c->present)
        return SAR_DEVICE_REMOVED;
    if (g_handles[slot]->generation != c->generation)
        return SAR_INVALIDHANDLEERR;
    *out = g_handles[slot];
    return SAR_OK;
}

static ULONG close_handle(const void *p, enum kind kind)
{
    int slot = handle_slot(p, kind);
    if (slot < 0)
        return SAR_INVALIDHANDLEERR;
    if (g_handles[slot]->md)
        EVP_MD_CTX_free(g_handles[slot]->md);
    g_handles[slot]->magic = 0;
    free(g_handles[slot]);
    g_handles[slot] = NULL;
    return SAR_OK;
}

/* Output with the size protocol: a NULL buffer asks for the size (answered SAR_OK or
 * SAR_BUFFER_TOO_SMALL by the knob); a short buffer gets SAR_BUFFER_TOO_SMALL. */
static ULONG put_sized(const struct control *c, const char *fn, const void *data, ULONG len,
                       BYTE *out, ULONG *pulLen)
{
    if (!pulLen)
        return SAR_INVALIDPARAMERR;
    int faulty = !strcmp(c->wrong_size_fn, fn);
    if (!out) {
        *pulLen = faulty && !c->wrong_size_overflow && len > 8 ? len - 8 : len;
        return c->too_small ? SAR_BUFFER_TOO_SMALL : SAR_OK;
    }
    if (*pulLen < len) {
        *pulLen = len;
        return SAR_BUFFER_TOO_SMALL;
    }
    memcpy(out, data, len);
    *pulLen = faulty && c->wrong_size_overflow ? *pulLen + 64 : len;
    return SAR_OK;
}

/* A multi-string "a\0b\0\0" of the names selected by `pick`. */
static ULONG put_names(const struct control *c, const char *fn, const char *const *names,
                       int count, LPSTR out, ULONG *pulSize)
{
    char list[MAX_CONTAINERS * NAME_LEN + 2];
    size_t len = 0;
    for (int i = 0; i < count; i++) {
        size_t n = strlen(names[i]) + 1;
        memcpy(list + len, names[i], n);
        len += n;
    }
    list[len++] = '\0';
    return put_sized(c, fn, list, (ULONG)len, (BYTE *)out, pulSize);
}

/* --- keys ----------------------------------------------------------------------------- */

static EVP_PKEY *load_key(const struct blob *der)
{
    const unsigned char *p = der->data;
    return der->len ? d2i_AutoPrivateKey(NULL, &p, (long)der->len) : NULL;
}

/* --- devices -------------------------------------------------------------------------- */

EXPORT ULONG SKF_EnumDev(BOOL bPresent, LPSTR szNameList, ULONG *pulSize)
{
    struct control c;
    ULONG rv = begin("SKF_EnumDev", &c);
    if (rv != SAR_OK)
        return rv;
    const char *names[MAX_DEVICES];
    int n = 0;
    if (c.present || !bPresent)
        for (int d = 0; d < g_store.ndev; d++)
            names[n++] = g_store.dev[d].name;
    return finish(put_names(&c, "SKF_EnumDev", names, n, szNameList, pulSize));
}

EXPORT ULONG SKF_ConnectDev(LPSTR szName, DEVHANDLE *phDev)
{
    struct control c;
    ULONG rv = begin("SKF_ConnectDev", &c);
    if (rv != SAR_OK)
        return rv;
    if (!szName || !phDev)
        return finish(SAR_INVALIDPARAMERR);
    for (int d = 0; d < g_store.ndev; d++) {
        if (strcmp(g_store.dev[d].name, szName) != 0)
            continue;
        if (!c.present)
            return finish(SAR_DEVICE_REMOVED);
        struct handle *h = new_handle(H_DEV, d, -1, -1, c.generation);
        if (!h)
            return finish(SAR_MEMORYERR);
        *phDev = h;
        return finish(SAR_OK);
    }
    return finish(SAR_INVALIDPARAMERR);
}

EXPORT ULONG SKF_DisConnectDev(DEVHANDLE hDev)
{
    struct control c;
    ULONG rv = begin("SKF_DisConnectDev", &c);
    return rv != SAR_OK ? rv : finish(close_handle(hDev, H_DEV));
}

EXPORT ULONG SKF_GetDevInfo(DEVHANDLE hDev, DEVINFO *pDevInfo)
{
    struct control c;
    struct handle *h;
    ULONG rv = begin("SKF_GetDevInfo", &c);
    if (rv != SAR_OK)
        return rv;
    if ((rv = use_handle(hDev, H_DEV, &c, &h)) != SAR_OK)
        return finish(rv);
    if (!pDevInfo)
        return finish(SAR_INVALIDPARAMERR);
    const struct device *dev = &g_store.dev[h->dev];
    memset(pDevInfo, 0, sizeof *pDevInfo);
    pDevInfo->Version = (VERSION){1, 0};
    /* fixed-size CHAR fields: a value filling the field has no NUL, as the standard allows */
    const char *maker = *dev->manufacturer ? dev->manufacturer : "card-agent softskf";
    memcpy(pDevInfo->Manufacturer, maker, strnlen(maker, sizeof pDevInfo->Manufacturer));
    memcpy(pDevInfo->Issuer, "card-agent test suite", 21);
    memcpy(pDevInfo->Label, dev->label, strnlen(dev->label, sizeof pDevInfo->Label));
    memcpy(pDevInfo->SerialNumber, dev->serial,
           strnlen(dev->serial, sizeof pDevInfo->SerialNumber));
    pDevInfo->HWVersion = (VERSION){1, 0};
    pDevInfo->FirmwareVersion = (VERSION){1, 2};
    pDevInfo->AlgSymCap = SGD_SM4_ECB | SGD_SM4_CBC;
    pDevInfo->AlgAsymCap = SGD_RSA | SGD_SM2_1 | SGD_SM2_3;
    pDevInfo->AlgHashCap = SGD_SM3 | SGD_SHA1 | SGD_SHA256;
    pDevInfo->DevAuthAlgId = SGD_SM4_ECB;
    pDevInfo->TotalSpace = 65536;
    pDevInfo->FreeSpace = 32768;
    pDevInfo->MaxECCBufferSize = 1024;
    pDevInfo->MaxBufferSize = 2048;
    return finish(SAR_OK);
}

/* --- applications and PINs ------------------------------------------------------------ */

EXPORT ULONG SKF_EnumApplication(DEVHANDLE hDev, LPSTR szAppName, ULONG *pulSize)
{
    struct control c;
    struct handle *h;
    ULONG rv = begin("SKF_EnumApplication", &c);
    if (rv != SAR_OK)
        return rv;
    if ((rv = use_handle(hDev, H_DEV, &c, &h)) != SAR_OK)
        return finish(rv);
    const char *names[MAX_APPS];
    int n = 0;
    for (int a = 0; a < g_store.napp; a++)
        if (g_store.app[a].dev == h->dev)
            names[n++] = g_store.app[a].name;
    return finish(put_names(&c, "SKF_EnumApplication", names, n, szAppName, pulSize));
}

EXPORT ULONG SKF_OpenApplication(DEVHANDLE hDev, LPSTR szAppName, HAPPLICATION *phApplication)
{
    struct control c;
    struct handle *h;
    ULONG rv = begin("SKF_OpenApplication", &c);
    if (rv != SAR_OK)
        return rv;
    if ((rv = use_handle(hDev, H_DEV, &c, &h)) != SAR_OK)
        return finish(rv);
    if (!szAppName || !phApplication)
        return finish(SAR_INVALIDPARAMERR);
    for (int a = 0; a < g_store.napp; a++) {
        if (g_store.app[a].dev != h->dev || strcmp(g_store.app[a].name, szAppName) != 0)
            continue;
        struct handle *app = new_handle(H_APP, h->dev, a, -1, c.generation);
        if (!app)
            return finish(SAR_MEMORYERR);
        *phApplication = app;
        return finish(SAR_OK);
    }
    return finish(SAR_APPLICATION_NOT_EXISTS);
}

EXPORT ULONG SKF_CloseApplication(HAPPLICATION hApplication)
{
    struct control c;
    ULONG rv = begin("SKF_CloseApplication", &c);
    return rv != SAR_OK ? rv : finish(close_handle(hApplication, H_APP));
}

static ULONG app_pin(HAPPLICATION hApp, ULONG type, const struct control *c, struct handle **h,
                     struct pin **pin)
{
    ULONG rv = use_handle(hApp, H_APP, c, h);
    if (rv != SAR_OK)
        return rv;
    if (type > 1)
        return SAR_USER_TYPE_INVALID;
    *pin = &g_store.app[(*h)->app].pins[type];
    return (*pin)->max ? SAR_OK : SAR_USER_TYPE_INVALID;
}

static int pin_length_ok(const char *pin)
{
    size_t n = pin ? strnlen(pin, PIN_MAX + 1) : 0;
    return n >= PIN_MIN && n <= PIN_MAX;
}

/* Compare, count, persist. SAR_PIN_INCORRECT with the tries left (0 on the last one);
 * SAR_PIN_LOCKED once nothing is left, without comparing. */
static ULONG check_pin(struct pin *pin, const char *given, ULONG *pulRetryCount)
{
    if (pin->left == 0) {
        if (pulRetryCount)
            *pulRetryCount = 0;
        return SAR_PIN_LOCKED;
    }
    size_t n = strlen(pin->value);
    int same = strnlen(given, PIN_MAX + 1) == n && CRYPTO_memcmp(given, pin->value, n) == 0;
    ULONG before = pin->left;
    pin->left = same ? pin->max : pin->left - 1;
    if (pin->left != before && save_store(&g_store) != 0)
        return SAR_FILEERR;
    if (pulRetryCount)
        *pulRetryCount = pin->left;
    return same ? SAR_OK : SAR_PIN_INCORRECT;
}

EXPORT ULONG SKF_GetPINInfo(HAPPLICATION hApplication, ULONG ulPINType, ULONG *pulMaxRetryCount,
                            ULONG *pulRemainRetryCount, BOOL *pbDefaultPin)
{
    struct control c;
    struct handle *h;
    struct pin *pin;
    ULONG rv = begin("SKF_GetPINInfo", &c);
    if (rv != SAR_OK)
        return rv;
    if ((rv = app_pin(hApplication, ulPINType, &c, &h, &pin)) != SAR_OK)
        return finish(rv);
    if (!pulMaxRetryCount || !pulRemainRetryCount || !pbDefaultPin)
        return finish(SAR_INVALIDPARAMERR);
    *pulMaxRetryCount = pin->max;
    *pulRemainRetryCount = pin->left;
    *pbDefaultPin = 0;
    return finish(SAR_OK);
}

EXPORT ULONG SKF_VerifyPIN(HAPPLICATION hApplication, ULONG ulPINType, LPSTR szPIN,
                           ULONG *pulRetryCount)
{
    struct control c;
    struct handle *h;
    struct pin *pin;
    ULONG rv = begin("SKF_VerifyPIN", &c);
    if (rv != SAR_OK)
        return rv;
    if ((rv = app_pin(hApplication, ulPINType, &c, &h, &pin)) != SAR_OK)
        return finish(rv);
    if (pin->left && !pin_length_ok(szPIN))
        return finish(SAR_PIN_LEN_RANGE);
    rv = check_pin(pin, szPIN ? szPIN : "", pulRetryCount);
    g_login[h->app] = rv == SAR_OK ? (int)ulPINType + 1 : 0;
    return finish(rv);
}

EXPORT ULONG SKF_ChangePIN(HAPPLICATION hApplication, ULONG ulPINType, LPSTR szOldPin,
                           LPSTR szNewPin, ULONG *pulRetryCount)
{
    struct control c;
    struct handle *h;
    struct pin *pin;
    ULONG rv = begin("SKF_ChangePIN", &c);
    if (rv != SAR_OK)
        return rv;
    if ((rv = app_pin(hApplication, ulPINType, &c, &h, &pin)) != SAR_OK)
        return finish(rv);
    if (pin->left && (!pin_length_ok(szOldPin) || !pin_length_ok(szNewPin)))
        return finish(SAR_PIN_LEN_RANGE);
    if ((rv = check_pin(pin, szOldPin ? szOldPin : "", pulRetryCount)) != SAR_OK)
        return finish(rv);
    copy_text(pin->value, sizeof pin->value, szNewPin);
    return finish(save_store(&g_store) == 0 ? SAR_OK : SAR_FILEERR);
}

EXPORT ULONG SKF_ClearSecureState(HAPPLICATION hApplication)
{
    struct control c;
    struct handle *h;
    ULONG rv = begin("SKF_ClearSecureState", &c);
    if (rv != SAR_OK)
        return rv;
    if ((rv = use_handle(hApplication, H_APP, &c, &h)) != SAR_OK)
        return finish(rv);
    g_login[h->app] = 0;
    return finish(SAR_OK);
}

/* --- containers ----------------------------------------------------------------------- */

EXPORT ULONG SKF_EnumContainer(HAPPLICATION hApplication, LPSTR szContainerName, ULONG *pulSize)
{
    struct control c;
    struct handle *h;
    ULONG rv = begin("SKF_EnumContainer", &c);
    if (rv != SAR_OK)
        return rv;
    if ((rv = use_handle(hApplication, H_APP, &c, &h)) != SAR_OK)
        return finish(rv);
    const char *names[MAX_CONTAINERS];
    int n = 0;
    for (int i = 0; i < g_store.ncont; i++)
        if (g_store.cont[i].app == h->app)
            names[n++] = g_store.cont[i].name;
    return finish(put_names(&c, "SKF_EnumContainer", names, n, szContainerName, pulSize));
}

EXPORT ULONG SKF_OpenContainer(HAPPLICATION hApplication, LPSTR szContainerName,
                               HCONTAINER *phContainer)
{
    struct control c;
    struct handle *h;
    ULONG rv = begin("SKF_OpenContainer", &c);
    if (rv != SAR_OK)
        return rv;
    if ((rv = use_handle(hApplication, H_APP, &c, &h)) != SAR_OK)
        return finish(rv);
    if (!szContainerName || !phContainer)
        return finish(SAR_INVALIDPARAMERR);
    for (int i = 0; i < g_store.ncont; i++) {
        if (g_store.cont[i].app != h->app || strcmp(g_store.cont[i].name, szContainerName) != 0)
            continue;
        struct handle *cont = new_handle(H_CONT, h->dev, h->app, i, c.generation);
        if (!cont)
            return finish(SAR_MEMORYERR);
        *phContainer = cont;
        return finish(SAR_OK);
    }
    return finish(SAR_FILE_NOT_EXIST);
}

EXPORT ULONG SKF_CloseContainer(HCONTAINER hContainer)
{
    struct control c;
    ULONG rv = begin("SKF_CloseContainer", &c);
    return rv != SAR_OK ? rv : finish(close_handle(hContainer, H_CONT));
}

EXPORT ULONG SKF_GetContainerType(HCONTAINER hContainer, ULONG *pulContainerType)
{
    struct control c;
    struct handle *h;
    ULONG rv = begin("SKF_GetContainerType", &c);
    if (rv != SAR_OK)
        return rv;
    if ((rv = use_handle(hContainer, H_CONT, &c, &h)) != SAR_OK)
        return finish(rv);
    if (!pulContainerType)
        return finish(SAR_INVALIDPARAMERR);
    *pulContainerType = g_store.cont[h->cont].type;
    return finish(SAR_OK);
}

EXPORT ULONG SKF_ExportCertificate(HCONTAINER hContainer, BOOL bSignFlag, BYTE *pbCert,
                                   ULONG *pulCertLen)
{
    struct control c;
    struct handle *h;
    ULONG rv = begin("SKF_ExportCertificate", &c);
    if (rv != SAR_OK)
        return rv;
    if ((rv = use_handle(hContainer, H_CONT, &c, &h)) != SAR_OK)
        return finish(rv);
    const struct container *cont = &g_store.cont[h->cont];
    const struct blob *cert = bSignFlag ? &cont->sign_cert : &cont->enc_cert;
    if (!cert->len)
        return finish(SAR_CERTNOTFOUNTERR);
    return finish(
        put_sized(&c, "SKF_ExportCertificate", cert->data, (ULONG)cert->len, pbCert, pulCertLen));
}

static ULONG public_blob(EVP_PKEY *key, ULONG type, BYTE *out, ULONG *len)
{
    if (type == CONTAINER_ECC) {
        ECCPUBLICKEYBLOB *blob = (ECCPUBLICKEYBLOB *)out;
        BYTE point[65];
        size_t n = 0;
        if (!EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point,
                                             &n) ||
            n != 65)
            return SAR_FAIL;
        memset(blob, 0, sizeof *blob);
        blob->BitLen = 256;
        memcpy(blob->XCoordinate + 32, point + 1, 32);
        memcpy(blob->YCoordinate + 32, point + 33, 32);
        *len = sizeof *blob;
        return SAR_OK;
    }
    RSAPUBLICKEYBLOB *blob = (RSAPUBLICKEYBLOB *)out;
    BIGNUM *n = NULL, *e = NULL;
    ULONG rv = SAR_FAIL;
    memset(blob, 0, sizeof *blob);
    if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n) &&
        EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e) && BN_num_bytes(n) <= 256 &&
        BN_num_bytes(e) <= 4) {
        blob->AlgID = SGD_RSA;
        blob->BitLen = (ULONG)BN_num_bits(n);
        BN_bn2binpad(n, blob->Modulus, 256);
        BN_bn2binpad(e, blob->PublicExponent, 4);
        *len = sizeof *blob;
        rv = SAR_OK;
    }
    BN_free(n);
    BN_free(e);
    return rv;
}

EXPORT ULONG SKF_ExportPublicKey(HCONTAINER hContainer, BOOL bSignFlag, BYTE *pbBlob,
                                 ULONG *pulBlobLen)
{
    struct control c;
    struct handle *h;
    ULONG rv = begin("SKF_ExportPublicKey", &c);
    if (rv != SAR_OK)
        return rv;
    if ((rv = use_handle(hContainer, H_CONT, &c, &h)) != SAR_OK)
        return finish(rv);
    const struct container *cont = &g_store.cont[h->cont];
    EVP_PKEY *key = load_key(bSignFlag ? &cont->sign_key : &cont->enc_key);
    if (!key)
        return finish(SAR_KEYNOTFOUNTERR);
    BYTE blob[sizeof(RSAPUBLICKEYBLOB)];
    ULONG len = 0;
    rv = public_blob(key, cont->type, blob, &len);
    EVP_PKEY_free(key);
    if (rv != SAR_OK)
        return finish(rv);
    return finish(put_sized(&c, "SKF_ExportPublicKey", blob, len, pbBlob, pulBlobLen));
}

/* --- signatures ----------------------------------------------------------------------- */

static ULONG signing_key(HCONTAINER hContainer, ULONG type, const struct control *c,
                         EVP_PKEY **key)
{
    struct handle *h;
    ULONG rv = use_handle(hContainer, H_CONT, c, &h);
    if (rv != SAR_OK)
        return rv;
    const struct container *cont = &g_store.cont[h->cont];
    if (cont->type != type)
        return SAR_KEYUSAGEERR;
    if (g_login[h->app] != 2)
        return SAR_USER_NOT_LOGGED_IN;
    *key = load_key(&cont->sign_key);
    return *key ? SAR_OK : SAR_KEYNOTFOUNTERR;
}

EXPORT ULONG SKF_ECCSignData(HCONTAINER hContainer, BYTE *pbDigest, ULONG ulDigestLen,
                             ECCSIGNATUREBLOB *pSignature)
{
    struct control c;
    EVP_PKEY *key = NULL;
    ULONG rv = begin("SKF_ECCSignData", &c);
    if (rv != SAR_OK)
        return rv;
    if ((rv = signing_key(hContainer, CONTAINER_ECC, &c, &key)) != SAR_OK)
        return finish(rv);
    if (!pbDigest || !pSignature) {
        EVP_PKEY_free(key);
        return finish(SAR_INVALIDPARAMERR);
    }
    if (ulDigestLen != 32) {
        EVP_PKEY_free(key);
        return finish(SAR_INDATALENERR);
    }
    /* OpenSSL 3 signs the input of EVP_PKEY_sign on an SM2 key as e itself. */
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);
    BYTE der[80];
    size_t der_len = sizeof der;
    ECDSA_SIG *sig = NULL;
    rv = SAR_FAIL;
    if (ctx && EVP_PKEY_sign_init(ctx) == 1 &&
        EVP_PKEY_sign(ctx, der, &der_len, pbDigest, 32) == 1) {
        const BYTE *p = der;
        sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    }
    if (sig) {
        size_t at = c.sig_left ? 0 : 32;
        memset(pSignature, 0, sizeof *pSignature);
        BN_bn2binpad(ECDSA_SIG_get0_r(sig), pSignature->r + at, 32);
        BN_bn2binpad(ECDSA_SIG_get0_s(sig), pSignature->s + at, 32);
        if (c.corrupt_signature)
            pSignature->s[63] ^= 0x01;
        rv = SAR_OK;
    }
    ECDSA_SIG_free(sig);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(key);
    return finish(rv);
}

EXPORT ULONG SKF_RSASignData(HCONTAINER hContainer, BYTE *pbData, ULONG ulDataLen,
                             BYTE *pbSignature, ULONG *pulSignLen)
{
    struct control c;
    EVP_PKEY *key = NULL;
    ULONG rv = begin("SKF_RSASignData", &c);
    if (rv != SAR_OK)
        return rv;
    if ((rv = signing_key(hContainer, CONTAINER_RSA, &c, &key)) != SAR_OK)
        return finish(rv);
    ULONG k = (ULONG)EVP_PKEY_get_size(key);
    if (!pbData || !pulSignLen) {
        rv = SAR_INVALIDPARAMERR;
    } else if (ulDataLen == 0 || ulDataLen > k - 11) {
        rv = SAR_INDATALENERR; /* PKCS#1 v1.5 type 1 needs 11 bytes of the block */
    } else if (!pbSignature) {
        *pulSignLen = k;
        rv = SAR_OK;
    } else if (*pulSignLen < k) {
        *pulSignLen = k;
        rv = SAR_BUFFER_TOO_SMALL;
    } else {
        /* No signature digest set: OpenSSL pads the data as given (type 1) and applies
         * the private key, i.e. the caller supplies the DigestInfo. */
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);
        size_t out = *pulSignLen;
        rv = SAR_FAIL;
        if (ctx && EVP_PKEY_sign_init(ctx) == 1 &&
            EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1 &&
            EVP_PKEY_sign(ctx, pbSignature, &out, pbData, ulDataLen) == 1) {
            *pulSignLen = (ULONG)out;
            if (c.corrupt_signature && out)
                pbSignature[out - 1] ^= 0x01;
            rv = SAR_OK;
        }
        EVP_PKEY_CTX_free(ctx);
    }
    EVP_PKEY_free(key);
    return finish(rv);
}

/* --- SM3 with Z (SKF_DigestInit with a public key and ID) ----------------------------- */

static const char *const SM2_CURVE_HEX =
    "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC" /* a */
    "28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93" /* b */
    "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7" /* Gx */
    "BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0"; /* Gy */

static int sm2_z(const ECCPUBLICKEYBLOB *key, const BYTE *id, ULONG id_len, BYTE z[32])
{
    struct blob curve;
    if (parse_hex(&curve, SM2_CURVE_HEX) != 0 || key->BitLen != 256 || id_len > 8191)
        return -1;
    BYTE entl[2] = {(BYTE)((id_len * 8) >> 8), (BYTE)(id_len * 8)};
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int n = 0;
    int ok = md && EVP_DigestInit_ex(md, EVP_sm3(), NULL) && EVP_DigestUpdate(md, entl, 2) &&
             EVP_DigestUpdate(md, id, id_len) && EVP_DigestUpdate(md, curve.data, curve.len) &&
             EVP_DigestUpdate(md, key->XCoordinate + 32, 32) &&
             EVP_DigestUpdate(md, key->YCoordinate + 32, 32) && EVP_DigestFinal_ex(md, z, &n);
    EVP_MD_CTX_free(md);
    return ok && n == 32 ? 0 : -1;
}

EXPORT ULONG SKF_DigestInit(DEVHANDLE hDev, ULONG ulAlgID, ECCPUBLICKEYBLOB *pPubKey,
                            BYTE *pucID, ULONG ulIDLen, HANDLE *phHash)
{
    struct control c;
    struct handle *h;
    ULONG rv = begin("SKF_DigestInit", &c);
    if (rv != SAR_OK)
        return rv;
    if (!c.digest || ulAlgID != SGD_SM3)
        return finish(SAR_NOTSUPPORTYETERR);
    if ((rv = use_handle(hDev, H_DEV, &c, &h)) != SAR_OK)
        return finish(rv);
    if (!phHash || (pPubKey && ulIDLen && !pucID))
        return finish(SAR_INVALIDPARAMERR);
    BYTE z[32];
    if (pPubKey && sm2_z(pPubKey, pucID, ulIDLen, z) != 0)
        return finish(SAR_INVALIDPARAMERR);
    struct handle *hash = new_handle(H_HASH, h->dev, -1, -1, c.generation);
    if (!hash)
        return finish(SAR_MEMORYERR);
    hash->md = EVP_MD_CTX_new();
    if (!hash->md || !EVP_DigestInit_ex(hash->md, EVP_sm3(), NULL) ||
        (pPubKey && !EVP_DigestUpdate(hash->md, z, 32))) {
        close_handle(hash, H_HASH);
        return finish(SAR_FAIL);
    }
    *phHash = hash;
    return finish(SAR_OK);
}

EXPORT ULONG SKF_Digest(HANDLE hHash, BYTE *pbData, ULONG ulDataLen, BYTE *pbHashData,
                        ULONG *pulHashLen)
{
    struct control c;
    struct handle *h;
    ULONG rv = begin("SKF_Digest", &c);
    if (rv != SAR_OK)
        return rv;
    if ((rv = use_handle(hHash, H_HASH, &c, &h)) != SAR_OK)
        return finish(rv);
    if (!pulHashLen || (ulDataLen && !pbData))
        return finish(SAR_INVALIDPARAMERR);
    if (!pbHashData) {
        *pulHashLen = 32;
        return finish(SAR_OK);
    }
    if (*pulHashLen < 32) {
        *pulHashLen = 32;
        return finish(SAR_BUFFER_TOO_SMALL);
    }
    unsigned int n = 0;
    if (!EVP_DigestUpdate(h->md, pbData, ulDataLen) || !EVP_DigestFinal_ex(h->md, pbHashData, &n))
        return finish(SAR_FAIL);
    *pulHashLen = n;
    return finish(SAR_OK);
}

EXPORT ULONG SKF_CloseHandle(HANDLE hHandle)
{
    struct control c;
    ULONG rv = begin("SKF_CloseHandle", &c);
    return rv != SAR_OK ? rv : finish(close_handle(hHandle, H_HASH));
}

/* --- device events -------------------------------------------------------------------- */

#ifndef SOFTSKF_NO_DEV_EVENTS

/* Blocks until a device event (reported one at a time, oldest first) or a cancel. Takes
 * g_lock only briefly to read the store, so other calls run while it waits. */
EXPORT ULONG SKF_WaitForDevEvent(LPSTR szDevName, ULONG *pulDevNameLen, ULONG *pulEvent)
{
    if (!szDevName || !pulDevNameLen || !pulEvent)
        return SAR_INVALIDPARAMERR;
    struct control c;
    for (;;) {
        read_control(&c);
        ULONG forced = forced_failure(&c, "SKF_WaitForDevEvent");
        if (forced != SAR_OK) {
            pthread_mutex_lock(&g_event_lock);
            g_waiting = 0;
            pthread_mutex_unlock(&g_event_lock);
            return forced;
        }
        pthread_mutex_lock(&g_lock);
        if (load_store(&g_store) != 0) {
            pthread_mutex_unlock(&g_lock);
            return SAR_FILEERR;
        }
        pthread_mutex_lock(&g_event_lock);
        observe_locked(&c, &g_store);
        pthread_mutex_unlock(&g_lock);
        if (g_cancel_pending) {
            g_cancel_pending = 0;
            g_waiting = 0;
            pthread_mutex_unlock(&g_event_lock);
            *pulEvent = 0;
            *pulDevNameLen = 0;
            return c.cancel_rc;
        }
        if (g_nevents) {
            struct event ev = g_events[0];
            memmove(&g_events[0], &g_events[1], sizeof g_events[0] * (size_t)(g_nevents - 1));
            g_nevents--;
            g_waiting = 0;
            pthread_mutex_unlock(&g_event_lock);
            ULONG need = (ULONG)strlen(ev.name) + 1;
            if (*pulDevNameLen < need) {
                *pulDevNameLen = need;
                return SAR_BUFFER_TOO_SMALL;
            }
            memcpy(szDevName, ev.name, need);
            *pulDevNameLen = need;
            *pulEvent = ev.kind;
            return SAR_OK;
        }
        g_waiting = 1;
        pthread_mutex_unlock(&g_event_lock);
        sleep_ms(10);
    }
}

EXPORT ULONG SKF_CancelWaitForDevEvent(void)
{
    struct control c;
    read_control(&c);
    pthread_mutex_lock(&g_event_lock);
    /* Without the latch, a cancel with nobody waiting is lost (as in some libraries). */
    if (g_waiting || c.cancel_latch)
        g_cancel_pending = 1;
    pthread_mutex_unlock(&g_event_lock);
    return SAR_OK;
}

#endif

/* --- for the tests -------------------------------------------------------------------- */

/* Forget every handle, login and event: a test starts from a freshly loaded library. */
EXPORT void SOFTSKF_Reset(void)
{
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < MAX_HANDLES; i++)
        if (g_handles[i])
            close_handle(g_handles[i], g_handles[i]->kind);
    memset(g_login, 0, sizeof g_login);
    pthread_mutex_lock(&g_event_lock);
    g_observed = 0;
    g_nevents = 0;
    pthread_mutex_lock(&g_calls_lock);
    memset(g_calls, 0, sizeof g_calls);
    pthread_mutex_unlock(&g_calls_lock);
#ifndef SOFTSKF_NO_DEV_EVENTS
    g_waiting = 0;
    g_cancel_pending = 0;
#endif
    pthread_mutex_unlock(&g_event_lock);
    pthread_mutex_unlock(&g_lock);
}

/* How many calls of `fn` since the last reset. */
EXPORT ULONG SOFTSKF_CallCount(const char *fn)
{
    unsigned long n = 0;
    pthread_mutex_lock(&g_calls_lock);
    for (int i = 0; i < MAX_COUNTED && g_calls[i].fn[0]; i++)
        if (fn && !strcmp(g_calls[i].fn, fn))
            n = g_calls[i].n;
    pthread_mutex_unlock(&g_calls_lock);
    return (ULONG)n;
}

/* 1 when some application's user PIN is verified (a login the card would honour). */
EXPORT ULONG SOFTSKF_UserLoggedIn(void)
{
    ULONG in = 0;
    pthread_mutex_lock(&g_lock);
    for (int a = 0; a < MAX_APPS; a++)
        in |= g_login[a] == 2;
    pthread_mutex_unlock(&g_lock);
    return in;
}

/* How many handles are open (a driver that leaks handles shows here). */
EXPORT ULONG SOFTSKF_OpenHandles(void)
{
    ULONG n = 0;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < MAX_HANDLES; i++)
        n += g_handles[i] != NULL;
    pthread_mutex_unlock(&g_lock);
    return n;
}

/* The C compiler's view of the structures ------------------------------------------------ */

#include <stddef.h>
#define FIELD(s, f) fprintf(out, " %s.%s=%zu", #s, #f, offsetof(s, f))

EXPORT ULONG SOFTSKF_Layout(char *buffer, ULONG size)
{
    FILE *out = fmemopen(buffer, size, "w");
    if (!out)
        return SAR_FAIL;
    fprintf(out, "DEVINFO=%zu ECCPUBLICKEYBLOB=%zu ECCSIGNATUREBLOB=%zu RSAPUBLICKEYBLOB=%zu",
            sizeof(DEVINFO), sizeof(ECCPUBLICKEYBLOB), sizeof(ECCSIGNATUREBLOB),
            sizeof(RSAPUBLICKEYBLOB));
    FIELD(DEVINFO, Version);
    FIELD(DEVINFO, Manufacturer);
    FIELD(DEVINFO, Issuer);
    FIELD(DEVINFO, Label);
    FIELD(DEVINFO, SerialNumber);
    FIELD(DEVINFO, HWVersion);
    FIELD(DEVINFO, FirmwareVersion);
    FIELD(DEVINFO, AlgSymCap);
    FIELD(DEVINFO, AlgAsymCap);
    FIELD(DEVINFO, AlgHashCap);
    FIELD(DEVINFO, DevAuthAlgId);
    FIELD(DEVINFO, TotalSpace);
    FIELD(DEVINFO, FreeSpace);
    FIELD(DEVINFO, MaxECCBufferSize);
    FIELD(DEVINFO, MaxBufferSize);
    FIELD(DEVINFO, Reserved);
    FIELD(ECCPUBLICKEYBLOB, BitLen);
    FIELD(ECCPUBLICKEYBLOB, XCoordinate);
    FIELD(ECCPUBLICKEYBLOB, YCoordinate);
    FIELD(ECCSIGNATUREBLOB, r);
    FIELD(ECCSIGNATUREBLOB, s);
    FIELD(RSAPUBLICKEYBLOB, AlgID);
    FIELD(RSAPUBLICKEYBLOB, BitLen);
    FIELD(RSAPUBLICKEYBLOB, Modulus);
    FIELD(RSAPUBLICKEYBLOB, PublicExponent);
    int ok = fclose(out) == 0;
    return ok ? SAR_OK : SAR_BUFFER_TOO_SMALL;
}
