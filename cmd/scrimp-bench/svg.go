package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/template"
)

// chart is a line chart: one line per series over a shared x axis, with
// vertical markers for events.
type chart struct {
	Title, XLabel, YLabel string
	Series                []series
	Events                []chartEvent
}

// series is one line of a chart; its points are in increasing X.
type series struct {
	Name   string
	Points []point
}

type point struct{ X, Y float64 }

// chartEvent marks something that happened at X (a join, a kill).
type chartEvent struct {
	X     float64
	Label string
}

// Layout of the drawing, in SVG user units.
const (
	svgWidth, svgHeight = 960, 540
	plotLeft, plotTop   = 70, 50
	plotRight           = 760 // the legend is right of it
	plotBottom          = 480
)

// palette are the lines' colours, reused in order past its end.
var palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
	"#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"}

// niceStep returns a round step (1, 2 or 5 × 10^k) that cuts span into
// about n intervals.
func niceStep(span float64, n int) float64 {
	if span <= 0 || n <= 0 {
		return 1
	}
	raw := span / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	switch f := raw / mag; {
	case f <= 1:
		return mag
	case f <= 2:
		return 2 * mag
	case f <= 5:
		return 5 * mag
	default:
		return 10 * mag
	}
}

// fmtNum prints a tick or coordinate without needless decimals.
func fmtNum(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		return "0"
	}
	return s
}

type svgTick struct {
	Pos   string // the coordinate on its axis
	Label string
}

type svgLine struct {
	Name, Colour, Points string
	LegendY              string
}

type svgEvent struct {
	X, LabelY, Label string
}

type svgData struct {
	chart
	W, H, Left, Top, Right, Bottom int
	TickEnd                        int
	MidX, MidY                     string
	XTicks, YTicks                 []svgTick
	Lines                          []svgLine
	Events                         []svgEvent
	LegendX, LegendTextX           int
}

var svgTemplate = template.Must(template.New("svg").Parse(`<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}" font-family="sans-serif" font-size="12">
<rect width="{{.W}}" height="{{.H}}" fill="white"/>
<text x="{{.MidX}}" y="25" text-anchor="middle" font-size="16">{{.Title | html}}</text>
{{- range .YTicks}}
<line x1="{{$.Left}}" y1="{{.Pos}}" x2="{{$.Right}}" y2="{{.Pos}}" stroke="#e0e0e0"/>
<text x="{{$.Left}}" y="{{.Pos}}" dx="-6" dy="4" text-anchor="end">{{.Label}}</text>
{{- end}}
{{- range .XTicks}}
<line x1="{{.Pos}}" y1="{{$.Bottom}}" x2="{{.Pos}}" y2="{{$.TickEnd}}" stroke="black"/>
<text x="{{.Pos}}" y="{{$.Bottom}}" dy="18" text-anchor="middle">{{.Label}}</text>
{{- end}}
<line x1="{{.Left}}" y1="{{.Bottom}}" x2="{{.Right}}" y2="{{.Bottom}}" stroke="black"/>
<line x1="{{.Left}}" y1="{{.Top}}" x2="{{.Left}}" y2="{{.Bottom}}" stroke="black"/>
<text x="{{.MidX}}" y="{{.H}}" dy="-20" text-anchor="middle">{{.XLabel | html}}</text>
<text transform="translate(20 {{.MidY}}) rotate(-90)" text-anchor="middle">{{.YLabel | html}}</text>
{{- range .Events}}
<line x1="{{.X}}" y1="{{$.Top}}" x2="{{.X}}" y2="{{$.Bottom}}" stroke="#555" stroke-dasharray="4 3"/>
<text x="{{.X}}" y="{{.LabelY}}" dx="3" font-size="11" fill="#333">{{.Label | html}}</text>
{{- end}}
{{- range .Lines}}
<polyline fill="none" stroke="{{.Colour}}" stroke-width="1.5" points="{{.Points}}"><title>{{.Name | html}}</title></polyline>
{{- end}}
{{- range .Lines}}
<line x1="{{$.LegendX}}" y1="{{.LegendY}}" x2="{{$.LegendTextX}}" y2="{{.LegendY}}" stroke="{{.Colour}}" stroke-width="3" transform="translate(-6 0)"/>
<text x="{{$.LegendTextX}}" y="{{.LegendY}}" dx="4" dy="4">{{.Name | html}}</text>
{{- end}}
</svg>
`))

// writeSVG draws c as a standalone SVG document: axes from 0 to the
// largest X and Y, round ticks, one polyline per series with its name in
// the legend, and a dashed vertical line per event. Text is escaped.
func writeSVG(w io.Writer, c chart) error {
	maxX, maxY := 0.0, 0.0
	for _, s := range c.Series {
		for _, p := range s.Points {
			maxX, maxY = max(maxX, p.X), max(maxY, p.Y)
		}
	}
	for _, e := range c.Events {
		maxX = max(maxX, e.X)
	}
	if maxX <= 0 {
		maxX = 1
	}
	if maxY <= 0 {
		maxY = 1
	}
	xStep, yStep := niceStep(maxX, 10), niceStep(maxY, 6)
	maxX = math.Ceil(maxX/xStep) * xStep
	maxY = math.Ceil(maxY/yStep) * yStep
	sx := func(x float64) float64 { return plotLeft + x/maxX*(plotRight-plotLeft) }
	sy := func(y float64) float64 { return plotBottom - y/maxY*(plotBottom-plotTop) }
	d := svgData{chart: c, W: svgWidth, H: svgHeight, Left: plotLeft, Top: plotTop, Right: plotRight, Bottom: plotBottom, TickEnd: plotBottom + 5,
		MidX: fmtNum((plotLeft + plotRight) / 2), MidY: fmtNum((plotTop + plotBottom) / 2),
		LegendX: plotRight + 30, LegendTextX: plotRight + 50}
	for i := 0; float64(i)*xStep <= maxX+xStep/1e6; i++ {
		x := float64(i) * xStep
		d.XTicks = append(d.XTicks, svgTick{Pos: fmtNum(sx(x)), Label: fmtNum(x)})
	}
	for i := 0; float64(i)*yStep <= maxY+yStep/1e6; i++ {
		y := float64(i) * yStep
		d.YTicks = append(d.YTicks, svgTick{Pos: fmtNum(sy(y)), Label: fmtNum(y)})
	}
	for i, s := range c.Series {
		var pts []string
		for _, p := range s.Points {
			pts = append(pts, fmtNum(sx(p.X))+","+fmtNum(sy(p.Y)))
		}
		d.Lines = append(d.Lines, svgLine{Name: s.Name, Colour: palette[i%len(palette)], Points: strings.Join(pts, " "),
			LegendY: fmtNum(float64(plotTop + 10 + 18*i))})
	}
	for i, e := range c.Events {
		// Labels step down so that neighbours do not overlap.
		d.Events = append(d.Events, svgEvent{X: fmtNum(sx(e.X)), Label: e.Label, LabelY: fmtNum(float64(plotTop + 12 + 14*(i%4)))})
	}
	if err := svgTemplate.Execute(w, d); err != nil {
		return fmt.Errorf("chart %q: %w", c.Title, err)
	}
	return nil
}
