// echo: TCP echo server and load client.
//
//	echo PORT
//	    Server: listens on 127.0.0.1:PORT, one goroutine per connection,
//	    writes back whatever it reads, until killed.
//
//	echo client PORT CONNS SECONDS SIZE
//	    Client: opens CONNS connections to 127.0.0.1:PORT (all of them before
//	    the clock starts), then each connection does ping-pong for SECONDS:
//	    write SIZE bytes, read SIZE bytes back, check them, repeat. Prints
//	    `RESULT echo_<CONNS> <round trips per second> msg/s`.
//	    The client speaks plain TCP, so it drives any echo server (weft's
//	    examples/echo_server too). Exit status 1 on any connection error.
package main

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

func serve(port string) {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Temporary() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			log.Fatal(err)
		}
		go func(c net.Conn) {
			defer c.Close()
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}(c)
	}
}

func atoi(name, s string) int {
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 {
		fmt.Fprintf(os.Stderr, "echo client: bad %s %q\n", name, s)
		os.Exit(2)
	}
	return v
}

func client(port string, conns, seconds, size int) {
	addr := net.JoinHostPort("127.0.0.1", port)
	cs := make([]net.Conn, conns)
	// Connect in parallel, a bounded number at a time, so a full accept
	// backlog does not serialise the setup behind SYN retransmits.
	var cerr atomic.Value
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range cs {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				cerr.Store(err)
				return
			}
			cs[i] = c
		}(i)
	}
	wg.Wait()
	if err := cerr.Load(); err != nil {
		fmt.Fprintf(os.Stderr, "echo client: connect: %v\n", err)
		os.Exit(1)
	}

	var stop int32
	var total int64
	var failed int32
	start := time.Now()
	deadline := start.Add(time.Duration(seconds) * time.Second)
	for i, c := range cs {
		wg.Add(1)
		go func(i int, c net.Conn) {
			defer wg.Done()
			// A stuck server must not hang the client past the run.
			c.SetDeadline(deadline.Add(5 * time.Second))
			out := bytes.Repeat([]byte{byte('a' + i%26)}, size)
			in := make([]byte, size)
			var n int64
			for atomic.LoadInt32(&stop) == 0 {
				if _, err := c.Write(out); err != nil {
					if atomic.LoadInt32(&stop) == 0 {
						fmt.Fprintf(os.Stderr, "echo client: conn %d: write: %v\n", i, err)
						atomic.StoreInt32(&failed, 1)
					}
					break
				}
				if _, err := io.ReadFull(c, in); err != nil {
					fmt.Fprintf(os.Stderr, "echo client: conn %d: read: %v\n", i, err)
					atomic.StoreInt32(&failed, 1)
					break
				}
				if !bytes.Equal(in, out) {
					fmt.Fprintf(os.Stderr, "echo client: conn %d: wrong data echoed\n", i)
					atomic.StoreInt32(&failed, 1)
					break
				}
				n++
			}
			atomic.AddInt64(&total, n)
		}(i, c)
	}
	time.Sleep(time.Until(deadline))
	atomic.StoreInt32(&stop, 1)
	wg.Wait()
	took := time.Since(start)
	for _, c := range cs {
		c.Close()
	}
	fmt.Printf("%d round trips of %d bytes over %d connections in %.2f s\n",
		total, size, conns, took.Seconds())
	if failed != 0 {
		os.Exit(1)
	}
	fmt.Printf("RESULT echo_%d %.0f msg/s\n", conns, float64(total)/took.Seconds())
}

func main() {
	switch {
	case len(os.Args) == 2 && os.Args[1] != "client":
		serve(os.Args[1])
	case len(os.Args) == 6 && os.Args[1] == "client":
		client(os.Args[2], atoi("CONNS", os.Args[3]), atoi("SECONDS", os.Args[4]), atoi("SIZE", os.Args[5]))
	default:
		fmt.Fprintln(os.Stderr, "usage: echo PORT | echo client PORT CONNS SECONDS SIZE")
		os.Exit(2)
	}
}
