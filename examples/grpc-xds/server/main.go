// Command server is the greeter of the grpc-xds example: a gRPC server,
// started next to a scrimp backend that advertises it as the grpc
// application "greeter", answering every call with its own name.
package main

import (
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"

	"github.com/scrimplb/scrimp/internal/greeter"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "address to serve on (the application-port of the backend's greeter)")
	name := flag.String("name", "", "name to answer with (default: the host name)")
	flag.Parse()
	if *name == "" {
		*name, _ = os.Hostname()
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	s := grpc.NewServer()
	greeter.Register(s, *name)
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		// Stop after scrimp has drained the backend: in-flight calls end.
		s.GracefulStop()
	}()
	log.Printf("greeter %s serving on %s", *name, ln.Addr())
	if err := s.Serve(ln); err != nil {
		log.Fatal(err)
	}
}
