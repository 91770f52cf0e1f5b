package seed

import (
	"testing"
	"time"
)

func TestParseAddressList(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr string
		// warned lists "line" values the skipped entries must be logged with.
		warned []string
	}{
		{name: "empty", in: "", want: nil},
		{name: "lines", in: "10.0.0.1:7000\n10.0.0.2\n", want: []string{"10.0.0.1:7000", "10.0.0.2:7946"}},
		{name: "comments and blanks", in: "# seeds\n\n  10.0.0.1:1 # first\n\t\n#10.0.0.9:1\n", want: []string{"10.0.0.1:1"}},
		{name: "CRLF", in: "10.0.0.1:1\r\n10.0.0.2:2\r\n", want: []string{"10.0.0.1:1", "10.0.0.2:2"}},
		{name: "IPv6 and names", in: "[::1]:5\nlb-1.example.com\n", want: []string{"[::1]:5", "lb-1.example.com:7946"}},
		{name: "sorted and deduplicated", in: "b:1\na:1\nb:1\n", want: []string{"a:1", "b:1"}},
		{
			name: "bad lines skipped", in: "10.0.0.1:1\nhost:99999\na b c\n10.0.0.2:2\n",
			want: []string{"10.0.0.1:1", "10.0.0.2:2"}, warned: []string{"line=2", "line=3"},
		},
		{name: "JSON", in: `["10.0.0.1:1", "10.0.0.2"]`, want: []string{"10.0.0.1:1", "10.0.0.2:7946"}},
		{name: "JSON empty", in: " [ ] ", want: nil},
		{name: "JSON on several lines", in: "[\n \"10.0.0.1:1\"\n]\n", want: []string{"10.0.0.1:1"}},
		{
			name: "JSON bad entries skipped with their line", in: "[\n  \"10.0.0.1:1\",\n  42,\n  \"x:0\"\n]",
			want: []string{"10.0.0.1:1"}, warned: []string{"line=3", "line=4"},
		},
		{name: "JSON malformed", in: `["10.0.0.1:1"`, wantErr: "JSON list"},
		{name: "JSON trailing garbage", in: `["10.0.0.1:1"] x`, wantErr: "after the closing bracket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, rec := testEnv(t)
			got, err := parseAddressList([]byte(tt.in), "test-source", testPort, nil, env.Logger)
			wantErr(t, err, tt.wantErr)
			if !sameAddrs(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			for _, line := range tt.warned {
				if rec.count("WARN", "test-source", line) != 1 {
					t.Errorf("no warning naming the source and %s", line)
				}
			}
			if n := rec.count("WARN"); n != len(tt.warned) {
				t.Errorf("%d warnings, want %d", n, len(tt.warned))
			}
		})
	}
}

func TestDurationOption(t *testing.T) {
	tests := []struct {
		name, value string
		want        time.Duration
		wantErr     string
	}{
		{name: "default", value: "", want: time.Minute},
		{name: "set", value: "1m30s", want: 90 * time.Second},
		{name: "not a duration", value: "x", wantErr: `push-period: "x" is not a duration`},
		{name: "no unit", value: "30", wantErr: `push-period: "30" is not a duration`},
		{name: "too small", value: "10ms", wantErr: `push-period: "10ms" is less than 1s`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := durationOption("push-period", tt.value, time.Minute, time.Second)
			wantErr(t, err, tt.wantErr)
			if err == nil && got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}
