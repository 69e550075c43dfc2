// Command cert-manager-controller runs cert-manager's controllers (module
// github.com/cert-manager/cert-manager, the version tools/cert-manager/go.mod pins) for the CA
// and SelfSigned issuers: Issuers and ClusterIssuers, the built-in approver, the
// CertificateRequest signers of both issuer types, and the Certificate controllers.
//
// It is a smaller main than upstream's cmd/controller, which cannot be built here (see go.mod):
// the same ContextFactory, the same registered controllers and informers, started the way
// upstream's controller.Run starts them, but flags of its own (the names upstream uses),
// no leader election (one replica), no profiler, and plain-HTTP metrics. Issuers of the other
// types (ACME, Vault, Venafi) stay Ready=False: no controller of theirs is linked in.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	logsapi "k8s.io/component-base/logs/api/v1"

	"github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/healthz"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"

	// Controllers register themselves with pkg/controller when imported.
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/metrics"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	// Issuer types register their setup (Issuer Ready) with pkg/issuer when imported.
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

type options struct {
	kubeconfig               string
	master                   string
	namespace                string
	clusterResourceNamespace string
	metricsListenAddress     string
	healthzListenAddress     string
	controllers              []string
	workers                  int
	qps                      float32
	burst                    int
	logging                  *logsapi.LoggingConfiguration
}

func main() {
	logf.InitLogs()
	defer logf.FlushLogs()

	opts := options{logging: logsapi.NewLoggingConfiguration()}
	fs := pflag.NewFlagSet("cert-manager-controller", pflag.ExitOnError)
	fs.StringVar(&opts.kubeconfig, "kubeconfig", "", "kubeconfig file; in-cluster configuration if empty")
	fs.StringVar(&opts.master, "master", "", "API server address, overriding the kubeconfig's")
	fs.StringVar(&opts.namespace, "namespace", "", "watch only this namespace (ClusterIssuers are then disabled); all if empty")
	fs.StringVar(&opts.clusterResourceNamespace, "cluster-resource-namespace", "kube-system",
		"namespace of the Secrets that ClusterIssuers refer to")
	fs.StringVar(&opts.metricsListenAddress, "metrics-listen-address", "127.0.0.1:9402", "Prometheus metrics (HTTP)")
	fs.StringVar(&opts.healthzListenAddress, "healthz-listen-address", "127.0.0.1:9403", "/livez (HTTP)")
	fs.StringSliceVar(&opts.controllers, "controllers", []string{"*"},
		"controllers to run: '*' for all linked in ("+strings.Join(known(), ", ")+"), '-name' removes one")
	fs.IntVar(&opts.workers, "concurrent-workers", 5, "workers per controller")
	fs.Float32Var(&opts.qps, "kube-api-qps", 20, "client-side QPS limit (unused when the API server has API Priority and Fairness)")
	fs.IntVar(&opts.burst, "kube-api-burst", 50, "client-side burst limit")
	logf.AddFlags(opts.logging, fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := logf.ValidateAndApply(opts.logging); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, logf.Log, "controller")
	if err := run(ctx, opts); err != nil {
		logf.Log.Error(err, "cert-manager controller failed")
		logf.FlushLogs()
		os.Exit(1)
	}
}

func known() []string {
	names := make([]string, 0, len(controller.Known()))
	for name := range controller.Known() {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// enabled resolves --controllers as upstream does: '*' for all, '-name' to leave one out.
func enabled(spec []string) (map[string]bool, error) {
	all := known()
	result := map[string]bool{}
	for _, item := range spec {
		switch {
		case item == "*":
			for _, name := range all {
				result[name] = true
			}
		case strings.HasPrefix(item, "-"):
			delete(result, item[1:])
		case slices.Contains(all, item):
			result[item] = true
		default:
			return nil, fmt.Errorf("unknown controller %q (linked in: %s)", item, strings.Join(all, ", "))
		}
	}
	return result, nil
}

func run(rootCtx context.Context, opts options) error {
	rootCtx, cancel := context.WithCancel(rootCtx)
	defer cancel()
	log := logf.FromContext(rootCtx)
	g, rootCtx := errgroup.WithContext(rootCtx)

	version := util.VersionInfo()
	log.Info("starting cert-manager controller", "version", version.GitVersion, "go_version", version.GoVersion)

	wanted, err := enabled(opts.controllers)
	if err != nil {
		return err
	}
	if opts.namespace != "" {
		delete(wanted, "clusterissuers")
	}

	factory, err := controller.NewContextFactory(rootCtx, controller.ContextOptions{
		Kubeconfig:         opts.kubeconfig,
		APIServerHost:      opts.master,
		KubernetesAPIQPS:   opts.qps,
		KubernetesAPIBurst: opts.burst,
		Namespace:          opts.namespace,
		IssuerOptions: controller.IssuerOptions{
			ClusterResourceNamespace: opts.clusterResourceNamespace,
		},
		IngressShimOptions: controller.IngressShimOptions{DefaultIssuerKind: "Issuer", DefaultIssuerGroup: "cert-manager.io"},
		CertificateOptions: controller.CertificateOptions{
			// Upstream's defaults (1h, doubled on each failure, at most 32h).
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	})
	if err != nil {
		return err
	}
	ctx, err := factory.Build()
	if err != nil {
		return err
	}

	ctx.Metrics.SetupCertificateCollector(ctx.SharedInformerFactory.Certmanager().V1().Certificates().Lister())
	ctx.Metrics.SetupIssuerCollector(ctx.SharedInformerFactory.Certmanager().V1().Issuers().Lister())
	if wanted["clusterissuers"] {
		ctx.Metrics.SetupClusterIssuerCollector(ctx.SharedInformerFactory.Certmanager().V1().ClusterIssuers().Lister())
	}
	var lc net.ListenConfig
	metricsListener, err := lc.Listen(rootCtx, "tcp", opts.metricsListenAddress)
	if err != nil {
		return fmt.Errorf("metrics address %s: %w", opts.metricsListenAddress, err)
	}
	metricsServer := ctx.Metrics.NewServer(metricsListener)
	g.Go(func() error {
		<-rootCtx.Done()
		shutdown, done := context.WithTimeout(context.Background(), 5*time.Second)
		defer done()
		return metricsServer.Shutdown(shutdown) //nolint:contextcheck
	})
	g.Go(func() error {
		log.Info("serving metrics", "address", metricsListener.Addr().String())
		if err := metricsServer.Serve(metricsListener); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})

	healthzListener, err := lc.Listen(rootCtx, "tcp", opts.healthzListenAddress)
	if err != nil {
		return fmt.Errorf("healthz address %s: %w", opts.healthzListenAddress, err)
	}
	healthzServer := healthz.NewServer(20 * time.Second)
	g.Go(func() error {
		log.Info("serving /livez", "address", healthzListener.Addr().String())
		return healthzServer.Start(rootCtx, healthzListener)
	})

	names := make([]string, 0, len(wanted))
	for name := range wanted {
		names = append(names, name)
	}
	slices.Sort(names)
	log.Info("enabled controllers: " + strings.Join(names, ","))
	for _, name := range names {
		loop, err := controller.Known()[name](factory)
		if err != nil {
			cancel()
			return errors.Join(fmt.Errorf("controller %s: %w", name, err), g.Wait())
		}
		g.Go(func() error {
			log.Info("starting controller", "controller", name)
			return loop.Run(opts.workers, rootCtx)
		})
	}

	ctx.SharedInformerFactory.Start(rootCtx.Done())
	ctx.KubeSharedInformerFactory.Start(rootCtx.Done())
	ctx.HTTP01ResourceMetadataInformersFactory.Start(rootCtx.Done())

	err = g.Wait()
	ctx.HTTP01ResourceMetadataInformersFactory.Shutdown()
	ctx.KubeSharedInformerFactory.Shutdown()
	ctx.SharedInformerFactory.Shutdown()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("control loops exited")
	return nil
}
