package seed

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/scrimplb/scrimp/keyring"
)

func init() { Register("s3", newS3) }

// s3Options is the "seed.s3" section. Durations are strings in
// time.ParseDuration syntax; empty means the default.
type s3Options struct {
	// Bucket holds the records. Required.
	Bucket string `json:"bucket"`
	// Prefix is prepended to every record's key; several clusters can
	// share a bucket under different prefixes.
	Prefix string `json:"prefix"`
	// Region is the bucket's region (S3-compatible stores mostly ignore
	// it, but request signing needs one).
	Region string `json:"region"`
	// Endpoint is the base URL of an S3-compatible store (MinIO,
	// DigitalOcean Spaces, R2, B2); empty means AWS.
	Endpoint string `json:"endpoint"`
	// PathStyle puts the bucket in the URL path instead of the host name,
	// which most self-hosted stores need.
	PathStyle bool `json:"path-style"`
	// ChecksumWhenRequired stops the SDK from sending and checking the
	// CRC checksums newer AWS SDKs add to every request, which several
	// S3-compatible stores reject.
	ChecksumWhenRequired bool `json:"checksum-when-required"`
	// PushPeriod is how often a load balancer rewrites its record.
	PushPeriod string `json:"push-period"`
	// Jitter spreads the rewrites by up to ± this much.
	Jitter string `json:"jitter"`
	// MaxAge is how old a record may be before readers ignore it: the
	// time it takes a crashed load balancer to stop being a seed.
	MaxAge string `json:"max-age"`
	// RequestTimeout bounds each S3 request, retries included.
	RequestTimeout string `json:"request-timeout"`
}

const (
	// s3MaxRecord caps how much of an object is read: a record is under
	// 200 bytes, and a huge object under the prefix must not eat memory.
	s3MaxRecord = 64 << 10
	// s3ListSlack is how far past max-age an object's Last-Modified time
	// (the store's clock) must be before Seeds skips it without a GET. It
	// is generous so that a store whose clock is off cannot hide live
	// records; it only saves requests on records of load balancers that
	// died long ago, which nothing deletes.
	s3ListSlack = time.Hour
)

// s3Seeds keeps one object per load balancer in a bucket. Load balancers
// own and refresh their object; backends list the prefix and join every
// fresh record. Nothing needs write access but the load balancers, and no
// load balancer ever writes another's object, so there are no races.
type s3Seeds struct {
	client         *s3.Client
	bucket, prefix string
	period, jitter time.Duration
	maxAge         time.Duration
	timeout        time.Duration
	log            *slog.Logger
	signer         *signer          // nil: records are unsigned (no keyring)
	name           string           // this node's name, written into its record
	now            func() time.Time // replaced in tests to age records
	pageSize       int32            // objects per LIST; 0 means the store's default (1000)

	mu     sync.Mutex
	warned map[string]string // key → ETag of a bad record already warned about
}

// Rekey implements Rekeyer: records are signed and checked with the new
// keys from now on, and bad records are warned about again.
func (s *s3Seeds) Rekey(keys keyring.Keys) error {
	if err := s.signer.rekey(keys); err != nil {
		return err
	}
	s.mu.Lock()
	clear(s.warned)
	s.mu.Unlock()
	return nil
}

func newS3(raw json.RawMessage, env Env) (Provider, error) {
	o := s3Options{Prefix: "scrimp/seeds/", Region: "us-east-1"}
	if err := DecodeStrict(raw, &o); err != nil {
		return nil, err
	}
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if o.Bucket == "" {
		check(errors.New("bucket: required"))
	}
	if o.Region == "" {
		check(errors.New(`region: required (any value, e.g. "us-east-1", for stores without regions)`))
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			check(fmt.Errorf("endpoint: %q is not an http:// or https:// URL", o.Endpoint))
		}
	}
	period, err := durationOption("push-period", o.PushPeriod, 30*time.Second, time.Second)
	check(err)
	jitter, err := durationOption("jitter", o.Jitter, 5*time.Second, 0)
	check(err)
	maxAge, err := durationOption("max-age", o.MaxAge, 2*time.Minute, time.Second)
	check(err)
	timeout, err := durationOption("request-timeout", o.RequestTimeout, 10*time.Second, 100*time.Millisecond)
	check(err)
	signer, err := newSigner(env.Keys)
	check(err)
	if len(errs) == 0 {
		if jitter >= period {
			check(fmt.Errorf("jitter: %s must be less than push-period (%s)", jitter, period))
		}
		// A record must outlive the longest gap between two refreshes, or
		// live load balancers would flicker out of the seed list.
		if maxAge <= period+jitter {
			check(fmt.Errorf("max-age: %s must exceed push-period + jitter (%s)", maxAge, period+jitter))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// The standard chain: environment, shared config and credentials
	// files, web identity, container and instance roles. Credentials are
	// fetched lazily, on the first request.
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion(o.Region))
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	client := s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = o.PathStyle
		if o.ChecksumWhenRequired {
			so.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
			so.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		}
	})
	return &s3Seeds{
		client:  client,
		bucket:  o.Bucket,
		prefix:  o.Prefix,
		period:  period,
		jitter:  jitter,
		maxAge:  maxAge,
		timeout: timeout,
		log:     env.Logger,
		signer:  signer,
		name:    env.NodeName,
		now:     time.Now,
		warned:  map[string]string{},
	}, nil
}

// PublishSchedule returns push-period and jitter; it never blocks.
func (s *s3Seeds) PublishSchedule() (period, jitter time.Duration) { return s.period, s.jitter }

// key is the object holding self's record. The address is base64url
// encoded so that IPv6 brackets and colons never meet a store's key rules.
func (s *s3Seeds) key(addr string) string {
	return s.prefix + base64.RawURLEncoding.EncodeToString([]byte(addr)) + ".json"
}

// Publish writes (or refreshes) self's record, signed when a keyring is
// configured. It blocks for one PUT, bounded by request-timeout, and may
// run concurrently with Seeds.
func (s *s3Seeds) Publish(ctx context.Context, self string) error {
	addr, err := CheckAddress(self, 0)
	if err != nil {
		return fmt.Errorf("seed s3: publish: %w", err)
	}
	body, err := s.signer.marshal(s.name, addr, s.now())
	if err != nil {
		return fmt.Errorf("seed s3: publish: %w", err)
	}
	key := s.key(addr)
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err = s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:      aws.String(s.bucket),
		Key:         aws.String(key),
		Body:        bytes.NewReader(body), // seekable: the SDK can sign and retry it
		ContentType: aws.String("application/json"),
	})
	if err != nil {
		return fmt.Errorf("seed s3: put s3://%s/%s: %w", s.bucket, key, err)
	}
	return nil
}

// Withdraw deletes self's record. It blocks for one DELETE, bounded by
// request-timeout; deleting a record that is not there succeeds.
func (s *s3Seeds) Withdraw(ctx context.Context, self string) error {
	addr, err := CheckAddress(self, 0)
	if err != nil {
		return fmt.Errorf("seed s3: withdraw: %w", err)
	}
	key := s.key(addr)
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)}); err != nil {
		return fmt.Errorf("seed s3: delete s3://%s/%s: %w", s.bucket, key, err)
	}
	return nil
}

// Seeds lists the prefix and returns the addresses of the fresh records,
// sorted and deduplicated. Bad, stale, unsigned (when a keyring is
// configured), tampered and misplaced records (whose address does not
// match their object key) are skipped with one warning each (per version
// of the object). It fails only when listing
// fails, or when every record it tried to read failed to download. It
// makes one LIST per 1000 objects plus one GET per recent object, each
// bounded by request-timeout.
func (s *s3Seeds) Seeds(ctx context.Context) ([]string, error) {
	objs, err := s.list(ctx)
	if err != nil {
		return nil, fmt.Errorf("seed s3: list s3://%s/%s: %w", s.bucket, s.prefix, err)
	}
	now := s.now()
	var (
		addrs   []string
		getErrs []error
		present = map[string]bool{}
	)
	for _, obj := range objs {
		key := aws.ToString(obj.Key)
		present[key] = true
		if !strings.HasSuffix(key, ".json") {
			s.log.Debug("seed s3: ignoring object that is not a record", "key", key)
			continue
		}
		etag := aws.ToString(obj.ETag)
		if lm := aws.ToTime(obj.LastModified); !lm.IsZero() && now.Sub(lm) > s.maxAge+s3ListSlack {
			s.warnOnce(key, etag, errors.New("last modified long ago"), "last-modified", lm)
			continue
		}
		data, err := s.get(ctx, key)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("seed s3: get s3://%s/%s: %w", s.bucket, key, err)
			}
			if _, gone := errors.AsType[*types.NoSuchKey](err); gone {
				continue // withdrawn between LIST and GET
			}
			getErrs = append(getErrs, fmt.Errorf("get s3://%s/%s: %w", s.bucket, key, err))
			continue
		}
		addr, err := s.parse(key, data, now)
		if err != nil {
			s.warnOnce(key, etag, err)
			continue
		}
		addrs = append(addrs, addr)
	}
	s.mu.Lock()
	for key := range s.warned {
		if !present[key] {
			delete(s.warned, key)
		}
	}
	s.mu.Unlock()
	if len(getErrs) > 0 {
		if len(addrs) == 0 {
			return nil, fmt.Errorf("seed s3: %w", errors.Join(getErrs...))
		}
		s.log.Warn("seed s3: some records could not be read", "err", errors.Join(getErrs...))
	}
	slices.Sort(addrs)
	return slices.Compact(addrs), nil
}

// list returns every object under the prefix, following pagination.
func (s *s3Seeds) list(ctx context.Context) ([]types.Object, error) {
	var objs []types.Object
	pages := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(s.bucket),
		Prefix: aws.String(s.prefix),
	}, func(o *s3.ListObjectsV2PaginatorOptions) {
		if s.pageSize > 0 {
			o.Limit = s.pageSize
		}
	})
	for pages.HasMorePages() {
		rctx, cancel := context.WithTimeout(ctx, s.timeout)
		page, err := pages.NextPage(rctx)
		cancel()
		if err != nil {
			return nil, err
		}
		objs = append(objs, page.Contents...)
	}
	return objs, nil
}

// get downloads one object, at most s3MaxRecord+1 bytes of it.
func (s *s3Seeds) get(ctx context.Context, key string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	return io.ReadAll(io.LimitReader(out.Body, s3MaxRecord+1))
}

// parse checks the record stored under key, returning its address or why
// it is skipped. The checks run in the order of signer.check, then the
// time, then the key: a record is only valid under the key its own
// address names, so a signed record copied elsewhere is refused.
func (s *s3Seeds) parse(key string, data []byte, now time.Time) (string, error) {
	if len(data) > s3MaxRecord {
		return "", fmt.Errorf("larger than %d bytes", s3MaxRecord)
	}
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return "", fmt.Errorf("not a JSON record: %w", err)
	}
	if v.Version != recordVersion {
		return "", fmt.Errorf("unknown record version %d (this node reads version %d)", v.Version, recordVersion)
	}
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil {
		return "", fmt.Errorf("not a JSON record: %w", err)
	}
	addr, err := s.signer.check(&rec, 0)
	if err != nil {
		return "", err
	}
	if rec.Updated == "" {
		return "", errors.New("no updated time")
	}
	updated, err := time.Parse(time.RFC3339, rec.Updated)
	if err != nil {
		return "", fmt.Errorf("updated time %q is not RFC 3339", rec.Updated)
	}
	switch age := now.Sub(updated); {
	case age > s.maxAge:
		return "", fmt.Errorf("stale: updated %s ago, max-age is %s", age.Round(time.Second), s.maxAge)
	case age < -s.maxAge:
		return "", fmt.Errorf("updated %s in the future: clocks differ by more than max-age", (-age).Round(time.Second))
	}
	if want := s.key(addr); key != want {
		return "", fmt.Errorf("record for %s (node %q) is under the wrong object key: a record of that address belongs at %s", addr, rec.Name, want)
	}
	return addr, nil
}

// warnOnce logs a skipped record at warning level the first time this
// version of it (ETag) is seen and at debug level afterwards, so a backend
// retrying every few seconds does not repeat itself.
func (s *s3Seeds) warnOnce(key, etag string, err error, args ...any) {
	s.mu.Lock()
	seen, ok := s.warned[key]
	s.warned[key] = etag
	s.mu.Unlock()
	args = append([]any{"bucket", s.bucket, "key", key, "err", err}, args...)
	if ok && seen == etag {
		s.log.Debug("seed s3: skipping record", args...)
		return
	}
	s.log.Warn("seed s3: skipping record", args...)
}
