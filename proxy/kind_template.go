package proxy

// template: the template generator renders for a proxy scrimp knows
// nothing about, so it runs only in external mode and the configuration
// names the file, the check and the reload (docs/templates.md).
func init() {
	RegisterKind(Kind{Name: "template", Generator: "template"})
}
