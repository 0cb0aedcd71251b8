/* A power-loss model for the fault suite, loaded with LD_PRELOAD into `syncline run`.
 *
 * Every regular file under $SYNCLINE_POWERLOSS_DIR is copied, whole, into
 * $SYNCLINE_POWERLOSS_SHADOW each time a process fsyncs or fdatasyncs it (after the real
 * call, before it returns: the caller never sees a sync succeed that the copy does not
 * hold). The shadow thus holds every file as of its last sync; syncing a directory makes
 * the names in it durable (a file never synced is then there, empty); unlinking a file
 * removes its copy. A power cut is then: SIGKILL every process, replace the directory by the
 * shadow (syncline.testing.powerloss). Everything written and not synced is lost, as on a
 * machine that loses power (writes reach the disk at a sync, not before; torn writes are
 * not modelled, and a name is durable once its file or its directory was synced).
 *
 * Copies are serialised by a lock file, so the copy taken last, which holds everything
 * synced before it, is the one kept. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *under(const char *path) {
    const char *dir = getenv("SYNCLINE_POWERLOSS_DIR");
    if (dir == NULL || getenv("SYNCLINE_POWERLOSS_SHADOW") == NULL) return NULL;
    size_t n = strlen(dir);
    if (strncmp(path, dir, n) != 0 || path[n] != '/') return NULL;
    return path + n + 1;
}

/* The copy's name: the path below the directory, '/' written as '%'. */
static void shadow_path(char *out, size_t size, const char *rel) {
    int n = snprintf(out, size, "%s/", getenv("SYNCLINE_POWERLOSS_SHADOW"));
    for (const char *c = rel; *c != '\0' && (size_t)n + 1 < size; c++) out[n++] = *c == '/' ? '%' : *c;
    out[n] = '\0';
}

static int lock_shadow(void) {
    char lock[PATH_MAX];
    snprintf(lock, sizeof lock, "%s/.lock", getenv("SYNCLINE_POWERLOSS_SHADOW"));
    int fd = open(lock, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) flock(fd, LOCK_EX);
    return fd;
}

static void unlock_shadow(int fd) {
    if (fd >= 0) {
        flock(fd, LOCK_UN);
        close(fd);
    }
}

/* A synced directory: the names in it are durable; a file never synced is there, empty. */
static void keep_names(const char *path) {
    const char *dir = getenv("SYNCLINE_POWERLOSS_DIR");
    if (dir == NULL || getenv("SYNCLINE_POWERLOSS_SHADOW") == NULL) return;
    const char *rel = strcmp(path, dir) == 0 ? "" : under(path);
    if (rel == NULL) return;
    DIR *d = opendir(path);
    if (d == NULL) return;
    int lk = lock_shadow();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_type != DT_REG) continue;
        char name[PATH_MAX], dst[PATH_MAX];
        snprintf(name, sizeof name, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        shadow_path(dst, sizeof dst, name);
        int fd = open(dst, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        if (fd >= 0) close(fd);
    }
    unlock_shadow(lk);
    closedir(d);
}

static void keep(int fd) {
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t len = readlink(link, path, sizeof path - 1);
    if (len <= 0) return;
    path[len] = '\0';
    struct stat st;
    if (fstat(fd, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        keep_names(path);
        return;
    }
    const char *rel = under(path);
    if (rel == NULL || !S_ISREG(st.st_mode) || st.st_nlink == 0) return;
    int src = open(link, O_RDONLY | O_CLOEXEC);
    if (src < 0) return;
    char dst[PATH_MAX], tmp[PATH_MAX];
    shadow_path(dst, sizeof dst, rel);
    snprintf(tmp, sizeof tmp, "%s/.tmp.%ld", getenv("SYNCLINE_POWERLOSS_SHADOW"), (long)syscall(SYS_gettid));
    int lk = lock_shadow();
    int out = open(tmp, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
    if (out >= 0) {
        static __thread char buf[1 << 16];
        ssize_t got;
        int ok = 1;
        while ((got = read(src, buf, sizeof buf)) > 0) {
            if (write(out, buf, (size_t)got) != got) {
                ok = 0;
                break;
            }
        }
        close(out);
        if (ok && got == 0) rename(tmp, dst); else unlink(tmp);
    }
    unlock_shadow(lk);
    close(src);
}

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int rc = real(fd);
    int saved = errno;
    if (rc == 0) keep(fd);
    errno = saved;
    return rc;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int rc = real(fd);
    int saved = errno;
    if (rc == 0) keep(fd);
    errno = saved;
    return rc;
}

static void forget(const char *path) {
    char abs[PATH_MAX], cwd[PATH_MAX];
    if (path[0] != '/') {
        if (getcwd(cwd, sizeof cwd) == NULL) return;
        snprintf(abs, sizeof abs, "%s/%s", cwd, path);
        path = abs;
    }
    const char *rel = under(path);
    if (rel == NULL) return;
    char dst[PATH_MAX];
    shadow_path(dst, sizeof dst, rel);
    int lk = lock_shadow();
    static int (*real_unlink)(const char *);
    if (real_unlink == NULL) real_unlink = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
    real_unlink(dst);
    unlock_shadow(lk);
}

int unlink(const char *path) {
    static int (*real)(const char *);
    if (real == NULL) real = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
    int rc = real(path);
    int saved = errno;
    if (rc == 0) forget(path);
    errno = saved;
    return rc;
}

int unlinkat(int dirfd, const char *path, int flags) {
    static int (*real)(int, const char *, int);
    if (real == NULL) real = (int (*)(int, const char *, int))dlsym(RTLD_NEXT, "unlinkat");
    int rc = real(dirfd, path, flags);
    int saved = errno;
    if (rc == 0 && (flags & AT_REMOVEDIR) == 0) {
        if (path[0] == '/' || dirfd == AT_FDCWD) {
            forget(path);
        } else {
            char link[64], dir[PATH_MAX], full[PATH_MAX];
            snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
            ssize_t len = readlink(link, dir, sizeof dir - 1);
            if (len > 0) {
                dir[len] = '\0';
                snprintf(full, sizeof full, "%s/%s", dir, path);
                forget(full);
            }
        }
    }
    errno = saved;
    return rc;
}
