package main

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/scrimplb/scrimp/admin"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/keyring"
)

// keysTimeout bounds a whole `scrimp keys` request; the node waits up to
// its own operation timeout for members' answers.
const keysTimeout = 30 * time.Second

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Generate gossip keys and rotate the keyring of a running cluster",
		Long: `Manage the gossip keyring (cluster.keyring-file) of every live node without
downtime, through the local node's admin socket (admin-socket):

  scrimp keys generate > new.key                          (a new random key)
  scrimp keys install - --config lb.json < new.key        (accepted everywhere)
  scrimp keys use - --config lb.json < new.key            (encrypt with it)
  scrimp keys remove - --config lb.json < old.key         (drop the old one)
  scrimp keys list --config lb.json

Each step reaches every live member, which saves its keyring file, so a
restart keeps it. Install everywhere before use, and use everywhere before
remove. KEY is base64; "-" reads it from standard input, which keeps it out
of the process list. Keys are shown by fingerprint only.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "generate",
		Short: "Print a new random 32-byte key (base64)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), base64.StdEncoding.EncodeToString(keyring.Generate()))
			return nil
		},
	})
	for _, op := range []struct{ name, short string }{
		{"list", "Show which keys the live members hold and use"},
		{"install", "Add KEY to every live member's keyring"},
		{"use", "Make KEY, installed everywhere, the primary of every live member"},
		{"remove", "Remove KEY, no longer the primary anywhere, from every live member"},
	} {
		cmd.AddCommand(newKeyOpCmd(op.name, op.short))
	}
	return cmd
}

func newKeyOpCmd(op, short string) *cobra.Command {
	var configPath string
	var asJSON bool
	use, args := op+" KEY --config FILE", cobra.ExactArgs(1)
	if op == "list" {
		use, args = "list --config FILE", cobra.NoArgs
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, args []string) error {
			if configPath == "" {
				return usageError(cmd, "--config FILE is required")
			}
			var key []byte
			if op != "list" {
				var err error
				if key, err = readKey(args[0], cmd.InOrStdin()); err != nil {
					return err
				}
				defer clear(key)
			}
			cfg, err := config.Load(configPath)
			if err != nil {
				return err
			}
			if cfg.AdminSocket == "" {
				return fmt.Errorf("%s: admin-socket is empty: the node serves no admin interface", configPath)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), keysTimeout)
			defer cancel()
			res, err := admin.NewClient(cfg.AdminSocket).Keys(ctx, op, key)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				printKeys(cmd.OutOrStdout(), res)
			}
			if len(res.Errors) > 0 {
				return fmt.Errorf("%s failed on %d of %d members", op, len(res.Errors), res.Members)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "", "the local node's configuration file (for its admin-socket)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the answer as JSON")
	return cmd
}

// readKey decodes a base64 key given as an argument, or read from in when
// arg is "-". Errors never quote the key.
func readKey(arg string, in io.Reader) ([]byte, error) {
	s := arg
	if arg == "-" {
		b, err := io.ReadAll(io.LimitReader(in, 4<<10))
		if err != nil {
			return nil, fmt.Errorf("reading the key from standard input: %w", err)
		}
		s = string(b)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, errors.New("the key is not valid standard base64 (scrimp keys generate makes one)")
	}
	if err := keyring.Check(key); err != nil {
		return nil, fmt.Errorf("the key: %w", err)
	}
	return key, nil
}

// printKeys writes, per key fingerprint, how many members hold it and how
// many use it as primary, then the members that failed and why.
func printKeys(w io.Writer, res admin.KeysResponse) {
	fps := slices.Collect(maps.Keys(res.Keys))
	slices.SortFunc(fps, func(a, b string) int {
		return cmp.Or(cmp.Compare(res.Primaries[b], res.Primaries[a]), cmp.Compare(a, b))
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tHELD BY\tPRIMARY ON")
	for _, fp := range fps {
		fmt.Fprintf(tw, "%s\t%d/%d\t%d\n", fp, res.Keys[fp], res.Responded, res.Primaries[fp])
	}
	tw.Flush()
	fmt.Fprintf(w, "%s: %d of %d members answered", res.Op, res.Responded, res.Members)
	if len(res.Errors) == 0 {
		fmt.Fprintln(w, ", no errors")
		return
	}
	fmt.Fprintf(w, ", %d failed:\n", len(res.Errors))
	for _, name := range slices.Sorted(maps.Keys(res.Errors)) {
		fmt.Fprintf(w, "  %s: %s\n", name, res.Errors[name])
	}
}
