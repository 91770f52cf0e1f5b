// Command client is the grpc-xds example's client: it dials
// xds:///greeter, so gRPC's xds resolver asks scrimp (GRPC_XDS_BOOTSTRAP,
// from `scrimp xds-bootstrap`) for the greeter's live backends, makes
// -calls unary calls over one ClientConn and prints where they went. With
// -key it sends that account id in x-account-id: an application balanced
// by "hash" on that header keeps the key on one backend.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"maps"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/xds" // registers the xds:/// resolver

	"github.com/scrimplb/scrimp/internal/greeter"
)

func main() {
	target := flag.String("target", "xds:///greeter", "gRPC target")
	calls := flag.Int("calls", 10000, "unary calls to make")
	key := flag.String("key", "", "account id to send in "+greeter.KeyHeader+" (keyed routing)")
	flag.Parse()
	conn, err := grpc.NewClient(*target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	counts := map[string]int{}
	failed := 0
	for range *calls {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		name, err := greeter.SayHello(ctx, conn, *key)
		cancel()
		if err != nil {
			failed++
			continue
		}
		counts[name]++
	}
	for _, name := range slices.Sorted(maps.Keys(counts)) {
		fmt.Printf("%-20s %d\n", name, counts[name])
	}
	fmt.Printf("failed               %d\n", failed)
}
