Install-ChocolateyVsixPackage -PackageName 'example-ext' `
  -VsixUrl 'https://marketplace.example.com/_apis/public/gallery/publishers/ex/vsextensions/ext/1.0/vspackage' `
  -Checksum 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' -ChecksumType 'sha256'
