// Command gitserver serves the bare Git repositories below -root over Git's smart HTTP
// protocol (git http-backend as CGI), read-only, on one address: the tests' "Git forge" for
// Flux's source-controller, on loopback.
package main

import (
	"flag"
	"log"
	"net/http"
	"net/http/cgi"
	"os/exec"
	"strings"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on (loopback)")
	root := flag.String("root", "", "folder holding the bare repositories (NAME.git)")
	backend := flag.String("backend", "", "path of git-http-backend (default: from `git --exec-path`)")
	flag.Parse()
	if *root == "" {
		log.Fatal("gitserver: -root is required")
	}
	path := *backend
	if path == "" {
		out, err := exec.Command("git", "--exec-path").Output()
		if err != nil {
			log.Fatalf("gitserver: git --exec-path: %v", err)
		}
		path = strings.TrimSpace(string(out)) + "/git-http-backend"
	}
	handler := &cgi.Handler{
		Path: path,
		Env: []string{
			"GIT_PROJECT_ROOT=" + *root,
			"GIT_HTTP_EXPORT_ALL=1",
		},
	}
	logged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s %s", r.RemoteAddr, r.Method, r.URL.RequestURI())
		handler.ServeHTTP(w, r)
	})
	log.Printf("gitserver: serving %s on http://%s/", *root, *listen)
	log.Fatal(http.ListenAndServe(*listen, logged))
}
