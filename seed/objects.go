package seed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// ObjectsOptions locate a bucket and prefix on S3 or an S3-compatible
// store; the fields mean what they mean in the "seed.s3" section.
type ObjectsOptions struct {
	// Bucket holds the objects. Required.
	Bucket string
	// Prefix is prepended to every key.
	Prefix string
	// Region signs requests; required (any value for stores without
	// regions).
	Region string
	// Endpoint is the base URL of an S3-compatible store; empty means AWS.
	Endpoint string
	// PathStyle puts the bucket in the URL path.
	PathStyle bool
	// ChecksumWhenRequired stops the SDK's default CRC checksums.
	ChecksumWhenRequired bool
	// RequestTimeout bounds each request, retries included; 0 means 10s.
	RequestTimeout time.Duration
}

// Objects is a small object API over one bucket and prefix: the only way
// packages other than seed reach S3, so that the AWS SDK stays here. Keys
// given to and returned by its methods are relative to the prefix. Its
// methods block for one or a few requests, each bounded by the request
// timeout, and are safe for concurrent use.
type Objects struct {
	client         *s3.Client
	bucket, prefix string
	timeout        time.Duration
}

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	// Key is relative to the prefix.
	Key      string
	Size     int64
	Modified time.Time
	// ETag identifies the object's current content (quoted, as S3 sends
	// it); DeleteIfMatch takes it.
	ETag string
}

// ErrPreconditionFailed is returned by DeleteIfMatch when the object
// changed since its ETag was read.
var ErrPreconditionFailed = errors.New("precondition failed")

// NewObjects builds a client with the AWS SDK's standard credential chain
// (environment, shared files, web identity, container and instance
// roles), fetched lazily on the first request. It makes no request.
func NewObjects(o ObjectsOptions) (*Objects, error) {
	if o.Bucket == "" {
		return nil, errors.New("objects: bucket: required")
	}
	if o.Region == "" {
		return nil, errors.New("objects: region: required")
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("objects: endpoint: %q is not an http:// or https:// URL", o.Endpoint)
		}
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 10 * time.Second
	}
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion(o.Region))
	if err != nil {
		return nil, fmt.Errorf("objects: load AWS configuration: %w", err)
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
	return &Objects{client: client, bucket: o.Bucket, prefix: o.Prefix, timeout: o.RequestTimeout}, nil
}

// CreateBucket creates the bucket; an existing bucket of ours is fine.
// Tests and first setups use it.
func (o *Objects) CreateBucket(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	_, err := o.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(o.bucket)})
	if err != nil && !hasCode(err, "BucketAlreadyOwnedByYou", "BucketAlreadyExists") {
		return fmt.Errorf("create bucket %s: %w", o.bucket, err)
	}
	return nil
}

func (o *Objects) where(key string) string { return "s3://" + o.bucket + "/" + o.prefix + key }

// statusOf returns the HTTP status of a failed request, or 0.
func statusOf(err error) int {
	if re, ok := errors.AsType[*smithyhttp.ResponseError](err); ok {
		return re.HTTPStatusCode()
	}
	return 0
}

func hasCode(err error, codes ...string) bool {
	if ae, ok := errors.AsType[smithy.APIError](err); ok {
		for _, c := range codes {
			if ae.ErrorCode() == c {
				return true
			}
		}
	}
	return false
}

func notFound(err error) bool {
	return statusOf(err) == http.StatusNotFound || hasCode(err, "NoSuchKey", "NotFound")
}

// Get returns an object's content and description. A missing object is
// an error wrapping fs.ErrNotExist.
func (o *Objects) Get(ctx context.Context, key string) ([]byte, ObjectInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	out, err := o.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(o.bucket), Key: aws.String(o.prefix + key)})
	if err != nil {
		if notFound(err) {
			return nil, ObjectInfo{}, fmt.Errorf("get %s: %w", o.where(key), fs.ErrNotExist)
		}
		return nil, ObjectInfo{}, fmt.Errorf("get %s: %w", o.where(key), err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, ObjectInfo{}, fmt.Errorf("get %s: read: %w", o.where(key), err)
	}
	return data, ObjectInfo{Key: key, Size: int64(len(data)), Modified: aws.ToTime(out.LastModified), ETag: aws.ToString(out.ETag)}, nil
}

// Stat describes an object without reading it; a missing object is an
// error wrapping fs.ErrNotExist.
func (o *Objects) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	out, err := o.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(o.bucket), Key: aws.String(o.prefix + key)})
	if err != nil {
		if notFound(err) {
			return ObjectInfo{}, fmt.Errorf("stat %s: %w", o.where(key), fs.ErrNotExist)
		}
		return ObjectInfo{}, fmt.Errorf("stat %s: %w", o.where(key), err)
	}
	return ObjectInfo{Key: key, Size: aws.ToInt64(out.ContentLength), Modified: aws.ToTime(out.LastModified), ETag: aws.ToString(out.ETag)}, nil
}

// Put writes an object, replacing any.
func (o *Objects) Put(ctx context.Context, key string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	_, err := o.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(o.bucket), Key: aws.String(o.prefix + key), Body: bytes.NewReader(data),
	})
	if err != nil {
		return fmt.Errorf("put %s: %w", o.where(key), err)
	}
	return nil
}

// PutIfAbsent writes an object only if no object has its key (a
// conditional write, If-None-Match: *). It returns false, and no error,
// when the object exists — also when a concurrent conditional write won.
func (o *Objects) PutIfAbsent(ctx context.Context, key string, data []byte) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	_, err := o.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(o.bucket), Key: aws.String(o.prefix + key), Body: bytes.NewReader(data),
		IfNoneMatch: aws.String("*"),
	})
	if err != nil {
		// 412: the object exists; 409: a concurrent conditional write
		// is in progress (AWS asks to retry; here the other writer wins).
		if s := statusOf(err); s == http.StatusPreconditionFailed || s == http.StatusConflict {
			return false, nil
		}
		return false, fmt.Errorf("put if absent %s: %w", o.where(key), err)
	}
	return true, nil
}

// Delete removes an object; deleting a missing object succeeds.
func (o *Objects) Delete(ctx context.Context, key string) error {
	return o.DeleteIfMatch(ctx, key, "")
}

// DeleteIfMatch removes an object if its ETag is still etag (If-Match;
// "" deletes unconditionally). It returns ErrPreconditionFailed when the
// object was replaced meanwhile; a missing object is not an error.
func (o *Objects) DeleteIfMatch(ctx context.Context, key, etag string) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	in := &s3.DeleteObjectInput{Bucket: aws.String(o.bucket), Key: aws.String(o.prefix + key)}
	if etag != "" {
		in.IfMatch = aws.String(etag)
	}
	if _, err := o.client.DeleteObject(ctx, in); err != nil {
		if notFound(err) {
			return nil
		}
		if statusOf(err) == http.StatusPreconditionFailed {
			return fmt.Errorf("delete %s: %w", o.where(key), ErrPreconditionFailed)
		}
		return fmt.Errorf("delete %s: %w", o.where(key), err)
	}
	return nil
}

// List returns the objects whose key starts with prefix (relative to the
// Objects' prefix). Recursive false stops at the next "/" and returns the
// common prefixes as entries with a trailing "/" and no size.
func (o *Objects) List(ctx context.Context, prefix string, recursive bool) ([]ObjectInfo, error) {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(o.bucket), Prefix: aws.String(o.prefix + prefix)}
	if !recursive {
		in.Delimiter = aws.String("/")
	}
	var infos []ObjectInfo
	p := s3.NewListObjectsV2Paginator(o.client, in)
	for p.HasMorePages() {
		pctx, cancel := context.WithTimeout(ctx, o.timeout)
		page, err := p.NextPage(pctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", o.where(prefix), err)
		}
		for _, obj := range page.Contents {
			infos = append(infos, ObjectInfo{
				Key: strings.TrimPrefix(aws.ToString(obj.Key), o.prefix), Size: aws.ToInt64(obj.Size),
				Modified: aws.ToTime(obj.LastModified), ETag: aws.ToString(obj.ETag),
			})
		}
		for _, cp := range page.CommonPrefixes {
			infos = append(infos, ObjectInfo{Key: strings.TrimPrefix(aws.ToString(cp.Prefix), o.prefix)})
		}
	}
	return infos, nil
}
