/*
 * The pod sandbox ("pause") process of mailward's images: PID 1 of every pod's sandbox.
 * It holds the pod's namespaces open, reaps the zombies that are re-parented to it, and exits
 * 0 on SIGTERM or SIGINT. Built by images/build.sh with `gcc -static -Os`; the image holds
 * nothing but /pause.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void shutdown_on(int signo) {
  (void)signo;
  _exit(0);
}

static void reap(int signo) {
  (void)signo;
  int saved = errno;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = saved;
}

static int handle(int signo, void (*handler)(int), int flags) {
  struct sigaction action;
  memset(&action, 0, sizeof(action));
  action.sa_handler = handler;
  action.sa_flags = flags;
  sigemptyset(&action.sa_mask);
  return sigaction(signo, &action, NULL);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    puts("mailward pause");
    return 0;
  }
  if (getpid() != 1) {
    fputs("pause: warning: not PID 1, zombies of other processes are not reaped\n", stderr);
  }
  if (handle(SIGINT, shutdown_on, 0) < 0 || handle(SIGTERM, shutdown_on, 0) < 0 ||
      handle(SIGCHLD, reap, SA_NOCLDSTOP | SA_RESTART) < 0) {
    perror("pause: sigaction");
    return 1;
  }
  for (;;) {
    pause();
  }
  return 42; /* not reached */
}
