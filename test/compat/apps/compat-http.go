// Go's net/http for the compatibility suite (test/compat/), built once into
// build/compat/compat-http-go.
//
//	compat-http-go server PORT DIR READYFILE   net/http file server; POST /sha answers the body's sha256
//	compat-http-go get URL                     net/http client; prints status, bytes, sha256 as JSON
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	switch os.Args[1] {
	case "server":
		ln, err := net.Listen("tcp", "[::]:"+os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		files := http.FileServer(http.Dir(os.Args[3]))
		mux := http.NewServeMux()
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/sha" {
				h := sha256.New()
				io.Copy(h, r.Body)
				io.WriteString(w, hex.EncodeToString(h.Sum(nil)))
				return
			}
			files.ServeHTTP(w, r)
		})
		os.WriteFile(os.Args[4], nil, 0o644)
		http.Serve(ln, mux)
	case "get":
		c := &http.Client{Timeout: 20 * time.Second}
		r, err := c.Get(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		sum := sha256.Sum256(body)
		json.NewEncoder(os.Stdout).Encode(map[string]any{"status": r.StatusCode, "bytes": len(body), "sha256": hex.EncodeToString(sum[:])})
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
