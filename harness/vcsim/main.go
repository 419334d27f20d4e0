// Command vcsim is upsvisor's test peer: VMware's vSphere simulator (govmomi
// 0.24.2 `simulator` package) behind a small front that adds what that
// version lacks (ShutdownHost_Task, RebootHost_Task, stubborn and tool-less
// guests, per-method latency, session expiry) and a plain-HTTP control
// server with the ground truth.
//
// It prints one JSON line on stdout:
//
//	{"url":"https://127.0.0.1:PORT/sdk","thumbprint":"AB:CD:...","ctl":"http://127.0.0.1:PORT2"}
//
// The package is laid out so that other files can add routes: a file of this
// package registers a func(*Harness) in extraRoutes from its init() (MOB pages
// are meant to go there).
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"math/big"
	mrand "math/rand"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
)

// Harness holds the simulator and the front's extra state.
type Harness struct {
	Model   *simulator.Model
	Service *simulator.Service
	Client  *vim25.Client // in-process client (internal session)
	VPX     bool

	// SDK is the mux the front forwards SOAP and other simulator paths to.
	SDK *http.ServeMux
	// Front is the mux of the (TLS) front server; extra routes go here.
	Front *http.ServeMux
	// Ctl is the mux of the plain-HTTP control server.
	Ctl *http.ServeMux

	mu         sync.Mutex
	latency    map[string]time.Duration
	vmMode     map[string]string // vm moref -> "stubborn" | "toolless"
	sessions   map[string]bool   // cookie value -> valid
	dark       map[string]bool   // host moref -> dark
	calls      map[string]int    // SOAP method -> requests seen
	darkDelay  time.Duration
	rebootTime time.Duration
	// guestShutdown is how long a guest takes to stop after ShutdownGuest
	// (0: the simulator's own behaviour, off before the call returns).
	guestShutdown time.Duration
	rng           *mrand.Rand
}

// extraRoutes lets other files of this package add routes (e.g. MOB pages).
var extraRoutes []func(h *Harness)

func main() {
	mode := flag.String("mode", "vpx", "vpx (vCenter) or esx (one ESXi host)")
	dcs := flag.Int("dc", 1, "datacenters (vpx)")
	clusters := flag.Int("clusters", 1, "clusters per datacenter (vpx)")
	clusterHosts := flag.Int("cluster-hosts", 3, "hosts per cluster (vpx)")
	standalone := flag.Int("standalone", 1, "standalone hosts per datacenter (vpx)")
	vms := flag.Int("vms", 2, "VMs per resource pool / standalone host (vpx) or on the host (esx)")
	seed := flag.Int64("seed", 1, "seed for randomising the model (placement, power, sizes, IPs)")
	randomize := flag.Bool("randomize", true, "randomise VM placement, power, sizes and IPs from -seed")
	useTLS := flag.Bool("tls", true, "serve the SDK over TLS with a fresh self-signed certificate")
	certOut := flag.String("cert-out", "", "write the certificate (PEM) here")
	latency := flag.String("latency", "", "per-method latency, e.g. RetrievePropertiesEx=50,Login=10 (ms)")
	darkDelay := flag.Int("dark-delay-ms", 300, "how long after ShutdownHost/RebootHost the host goes dark")
	user := flag.String("user", "user", "the one account's user name")
	pass := flag.String("pass", "pass", "the one account's password")
	rebootMs := flag.Int("reboot-ms", 1000, "how long a rebooting host stays dark")
	guestShutdownMs := flag.Int("guest-shutdown-ms", 0, "how long a guest takes to power off after ShutdownGuest (0: at once, as the simulator does)")
	flag.Parse()
	log.SetOutput(os.Stderr)

	var model *simulator.Model
	if *mode == "esx" {
		model = simulator.ESX()
	} else {
		model = simulator.VPX()
		model.Datacenter = *dcs
		model.Cluster = *clusters
		model.ClusterHost = *clusterHosts
		model.Host = *standalone
		model.Portgroup = 0
	}
	model.Machine = *vms
	if err := model.Create(); err != nil {
		log.Fatalf("creating model: %v", err)
	}
	defer model.Remove()

	client, err := vim25.NewClient(context.Background(), model.Service)
	if err != nil {
		log.Fatalf("in-process client: %v", err)
	}

	h := &Harness{
		Model:         model,
		Service:       model.Service,
		Client:        client,
		VPX:           *mode != "esx",
		latency:       map[string]time.Duration{},
		vmMode:        map[string]string{},
		sessions:      map[string]bool{},
		dark:          map[string]bool{},
		calls:         map[string]int{},
		darkDelay:     time.Duration(*darkDelay) * time.Millisecond,
		rebootTime:    time.Duration(*rebootMs) * time.Millisecond,
		guestShutdown: time.Duration(*guestShutdownMs) * time.Millisecond,
		rng:           mrand.New(mrand.NewSource(*seed)),
	}
	for _, kv := range strings.Split(*latency, ",") {
		if kv == "" {
			continue
		}
		parts := strings.SplitN(kv, "=", 2)
		ms, err := strconv.Atoi(parts[len(parts)-1])
		if len(parts) != 2 || err != nil {
			log.Fatalf("bad -latency entry %q", kv)
		}
		h.latency[parts[0]] = time.Duration(ms) * time.Millisecond
	}

	// The simulator's own server registers the SDK handlers on its mux; we
	// keep it on loopback and serve our own front in front of that mux.
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(*user, *pass)}
	inner := model.Service.NewServer()
	defer inner.Close()
	h.SDK = model.Service.ServeMux

	h.prepareModel(*randomize)

	h.Front = http.NewServeMux()
	h.Front.HandleFunc("/sdk", h.serveSDK)
	h.Front.Handle("/", h.SDK)
	h.Ctl = http.NewServeMux()
	h.registerCtl()
	for _, f := range extraRoutes {
		f(h)
	}

	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	ctl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatalf("listen: %v", err)
	}

	scheme := "http"
	thumb := ""
	srv := &http.Server{Handler: h.Front}
	if *useTLS {
		cert, der, err := selfSigned()
		if err != nil {
			log.Fatalf("certificate: %v", err)
		}
		sum := sha256.Sum256(der)
		hexes := make([]string, len(sum))
		for i, b := range sum {
			hexes[i] = fmt.Sprintf("%02X", b)
		}
		thumb = strings.Join(hexes, ":")
		if *certOut != "" {
			pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
			if err := ioutil.WriteFile(*certOut, pemBytes, 0o644); err != nil {
				log.Fatalf("writing %s: %v", *certOut, err)
			}
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		scheme = "https"
		go func() { _ = srv.ServeTLS(front, "", "") }()
	} else {
		go func() { _ = srv.Serve(front) }()
	}
	go func() { _ = http.Serve(ctl, h.Ctl) }()

	out, _ := json.Marshal(map[string]string{
		"url":        fmt.Sprintf("%s://%s/sdk", scheme, front.Addr()),
		"thumbprint": thumb,
		"ctl":        fmt.Sprintf("http://%s", ctl.Addr()),
		"mode":       *mode,
	})
	fmt.Println(string(out))

	// Run until killed or stdin closes (so a crashed test leaves no orphan).
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		buf := make([]byte, 1)
		for {
			if _, err := os.Stdin.Read(buf); err != nil {
				sig <- syscall.SIGTERM
				return
			}
		}
	}()
	<-sig
}

// selfSigned makes a fresh ECDSA certificate for 127.0.0.1 / localhost.
func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"upsvisor vcsim"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, der, nil
}
