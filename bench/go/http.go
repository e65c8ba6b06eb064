// http: net/http "hello" server, the Go peer of weft's examples/http_hello.
//
// GET / answers 200 with the body "Hello, World!\n" and
// Content-Type: text/plain. net/http adds Content-Length: 14 and a Date
// header by itself, and keeps connections alive (HTTP/1.1 default).
//
// Usage: http PORT   (listens on 127.0.0.1:PORT until killed)
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
)

var body = []byte("Hello, World!\n")

func hello(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write(body)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: http PORT")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", os.Args[1]))
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(hello)}
	log.Fatal(srv.Serve(ln))
}
