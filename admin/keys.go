package admin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/scrimplb/scrimp/cluster"
)

// KeyManager applies gossip key operations across the cluster
// (cluster.Cluster does). KeyOp blocks until every live member answered
// or ctx ends, and must be safe for concurrent calls.
type KeyManager interface {
	KeyOp(ctx context.Context, op cluster.KeyOpKind, key []byte) (cluster.KeyResult, error)
}

// KeyRequest is the body of POST /v1/keys/{install,use,remove}.
type KeyRequest struct {
	// Key is the key in standard base64: 16, 24 or 32 bytes.
	Key string `json:"key"`
}

// KeysResponse answers every /v1/keys request: the operation and how it
// went on each member. It holds key fingerprints only.
type KeysResponse struct {
	Op string `json:"op"`
	cluster.KeyResult
}

// maxKeyBody bounds a key request's body; a key is 44 base64 characters.
const maxKeyBody = 4 << 10

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	s.keyOp(w, r, cluster.KeyList, nil)
}

func (s *Server) changeKeys(w http.ResponseWriter, r *http.Request) {
	op, err := cluster.ParseKeyOp(r.PathValue("op"))
	if err != nil || op == cluster.KeyList {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s: want /v1/keys/install, /v1/keys/use or /v1/keys/remove", r.URL.Path))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "the body must be JSON (application/json)")
		return
	}
	var req KeyRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxKeyBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		// The decoder's errors can quote the body, which holds a key:
		// say only what kind of problem it is.
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxKeyBody))
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			writeError(w, http.StatusBadRequest, `unknown field in the body: want {"key": "<base64>"}`)
		default:
			writeError(w, http.StatusBadRequest, `the body is not {"key": "<base64>"}`)
		}
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "data after the JSON body")
		return
	}
	if req.Key == "" {
		writeError(w, http.StatusBadRequest, `"key" is required: a base64 key (scrimp keys generate)`)
		return
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(req.Key))
	if err != nil {
		writeError(w, http.StatusBadRequest, `"key" is not valid standard base64`)
		return
	}
	defer clear(key)
	s.keyOp(w, r, op, key)
}

func (s *Server) keyOp(w http.ResponseWriter, r *http.Request, op cluster.KeyOpKind, key []byte) {
	if s.cfg.Keys == nil {
		writeError(w, http.StatusNotImplemented, "this node does not manage keys")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.OpTimeout)
	defer cancel()
	res, err := s.cfg.Keys.KeyOp(ctx, op, key)
	if err != nil {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, cluster.ErrBadKey):
			status = http.StatusBadRequest
		case errors.Is(err, cluster.ErrNoKeyring), errors.Is(err, cluster.ErrKeyRefused):
			status = http.StatusConflict
		case errors.Is(err, cluster.ErrKeyOpsBusy):
			status = http.StatusServiceUnavailable
		}
		s.log.Warn("key operation failed", "op", op.String(), "err", err)
		writeError(w, status, err.Error())
		return
	}
	if len(res.Errors) > 0 {
		s.log.Warn("key operation failed on some members", "op", op.String(), "members", res.Members, "failed", len(res.Errors))
	} else {
		s.log.Info("key operation done", "op", op.String(), "members", res.Members)
	}
	writeJSON(w, http.StatusOK, KeysResponse{Op: op.String(), KeyResult: res})
}
